//! Repository functions for tenant-owned rows never cross tenants, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::on_both_backends;
use pbx_contract::{ExtensionId, Plan, Role, TenantState, UserId};

async fn two_tenants(db: &Db) -> (tenants::Tenant, tenants::Tenant) {
    let mut c = db.acquire().await.unwrap();
    let mk = |slug: &'static str| tenants::NewTenant {
        slug,
        name: slug,
        plan: Plan::Standard,
        state: TenantState::Active,
        reseller_id: None,
    };
    let a = tenants::insert(&mut c, &mk("alpha")).await.unwrap();
    let b = tenants::insert(&mut c, &mk("bravo")).await.unwrap();
    (a, b)
}

on_both_backends!(extensions_are_scoped_by_tenant, |db: Db| async move {
    let (a, b) = two_tenants(&db).await;
    let mut c = db.acquire().await.unwrap();
    let new = |id, number| extensions::NewExtension {
        id,
        number,
        display_name: "x",
        email: None,
        sip_secret_enc: "v1:x",
        recording: pbx_contract::RecordingPolicy::Off,
        ring_timeout_secs: 30,
    };
    let b_ext = extensions::insert(&mut c, b.id, &new(ExtensionId::new(), "100"))
        .await
        .unwrap();
    // The same number in another tenant is fine; twice in one tenant is a conflict.
    extensions::insert(&mut c, a.id, &new(ExtensionId::new(), "100"))
        .await
        .unwrap();
    let dup = extensions::insert(&mut c, a.id, &new(ExtensionId::new(), "100")).await;
    assert!(
        matches!(dup, Err(crate::Error::Conflict { ref field, .. }) if field == "number"),
        "{dup:?}"
    );

    assert_eq!(extensions::get(&mut c, a.id, b_ext.id).await.unwrap(), None);
    assert_eq!(
        extensions::get(&mut c, b.id, b_ext.id)
            .await
            .unwrap()
            .map(|e| e.id),
        Some(b_ext.id)
    );
    assert_eq!(
        extensions::get_by_number(&mut c, a.id, "100")
            .await
            .unwrap()
            .map(|e| e.tenant_id),
        Some(a.id)
    );
    assert!(extensions::list(&mut c, a.id)
        .await
        .unwrap()
        .iter()
        .all(|e| e.tenant_id == a.id));
    assert_eq!(extensions::count(&mut c, a.id).await.unwrap(), 1);
    let patch = extensions::ExtensionPatch {
        number: None,
        display_name: Some("hijacked"),
        email: None,
        sip_secret_enc: None,
        recording: Some(pbx_contract::RecordingPolicy::Always),
        ring_timeout_secs: None,
    };
    assert_eq!(
        extensions::update(&mut c, a.id, b_ext.id, &patch).await.unwrap(),
        None
    );
    assert!(!extensions::delete(&mut c, a.id, b_ext.id).await.unwrap());
    let still = extensions::get(&mut c, b.id, b_ext.id).await.unwrap().unwrap();
    assert_eq!(still.display_name, "x");
    assert_eq!(still.recording, pbx_contract::RecordingPolicy::Off);
    assert!(extensions::delete(&mut c, b.id, b_ext.id).await.unwrap());
});

on_both_backends!(users_are_scoped_by_tenant, |db: Db| async move {
    let (a, b) = two_tenants(&db).await;
    let mut c = db.acquire().await.unwrap();
    let new = |email| users::NewUser {
        email,
        display_name: "u",
        role: Role::Agent,
        password_hash: None,
        must_change_password: false,
        reseller_id: None,
    };
    let b_user = users::insert(&mut c, Some(b.id), &new("same@x.test"))
        .await
        .unwrap();
    let a_user = users::insert(&mut c, Some(a.id), &new("same@x.test"))
        .await
        .unwrap();
    assert!(matches!(
        users::insert(&mut c, Some(a.id), &new("same@x.test")).await,
        Err(crate::Error::Conflict { .. })
    ));
    // Platform users have their own email namespace.
    users::insert(&mut c, None, &new("same@x.test")).await.unwrap();
    assert!(matches!(
        users::insert(&mut c, None, &new("same@x.test")).await,
        Err(crate::Error::Conflict { .. })
    ));

    assert_eq!(users::get(&mut c, a.id, b_user.id).await.unwrap(), None);
    assert_eq!(
        users::find_by_email(&mut c, Some(a.id), "same@x.test")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(a_user.id)
    );
    assert_eq!(
        users::list(&mut c, a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect::<Vec<_>>(),
        vec![a_user.id]
    );
    let patch = users::UserPatch {
        display_name: Some("hijacked"),
        role: Some(Role::TenantAdmin),
    };
    assert_eq!(
        users::update(&mut c, a.id, b_user.id, &patch).await.unwrap(),
        None
    );
    assert!(!users::delete(&mut c, a.id, b_user.id).await.unwrap());
    assert!(!users::delete(&mut c, a.id, UserId::new()).await.unwrap());
    let still = users::get(&mut c, b.id, b_user.id).await.unwrap().unwrap();
    assert_eq!((still.display_name.as_str(), still.role), ("u", Role::Agent));
});

on_both_backends!(audit_and_tenant_deletion, |db: Db| async move {
    let (a, b) = two_tenants(&db).await;
    let mut tx = db.begin().await.unwrap();
    let actor = audit::Actor::system("test");
    for (t, id) in [(a.id, "1"), (b.id, "2")] {
        audit::record(
            &mut tx,
            &actor,
            &audit::AuditEntry {
                tenant: Some(t),
                action: "x.create",
                entity: "x",
                entity_id: id,
                before: None,
                after: Some(serde_json::json!({"k": 1})),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let mut c = db.acquire().await.unwrap();
    let a_log = audit::list_for_tenant(&mut c, a.id, 10).await.unwrap();
    assert_eq!(a_log.len(), 1);
    assert_eq!(a_log[0].entity_id, "1");
    assert_eq!(a_log[0].after, Some(serde_json::json!({"k": 1})));
    // Versions count up per tenant; deleting a tenant takes its rows but not the audit trail.
    assert_eq!(tenants::bump_config_version(&mut c, a.id).await.unwrap(), 1);
    assert_eq!(tenants::bump_config_version(&mut c, a.id).await.unwrap(), 2);
    assert_eq!(tenants::bump_config_version(&mut c, b.id).await.unwrap(), 1);
    extensions::insert(
        &mut c,
        a.id,
        &extensions::NewExtension {
            id: ExtensionId::new(),
            number: "1",
            display_name: "x",
            email: None,
            sip_secret_enc: "v1:x",
            recording: pbx_contract::RecordingPolicy::Off,
            ring_timeout_secs: 30,
        },
    )
    .await
    .unwrap();
    assert!(tenants::delete(&mut c, a.id).await.unwrap());
    assert_eq!(extensions::count(&mut c, a.id).await.unwrap(), 0);
    assert_eq!(audit::list_for_tenant(&mut c, a.id, 10).await.unwrap().len(), 1);
    assert!(tenants::get(&mut c, b.id).await.unwrap().is_some());
});

on_both_backends!(outbox_and_processed_events, |db: Db| async move {
    let mut c = db.acquire().await.unwrap();
    outbox::enqueue(&mut c, "cfg", "one").await.unwrap();
    outbox::enqueue(&mut c, "cfg", "two").await.unwrap();
    let batch = outbox::claim_batch(&mut c, db.backend(), 10).await.unwrap();
    assert_eq!(
        batch.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>(),
        vec!["one", "two"]
    );
    outbox::mark_published(&mut c, batch[0].id).await.unwrap();
    assert_eq!(outbox::pending_count(&mut c).await.unwrap(), 1);
    assert_eq!(
        outbox::claim_batch(&mut c, db.backend(), 10).await.unwrap()[0].payload,
        "two"
    );
    assert!(edge_log::mark_processed(&mut c, "ev-1").await.unwrap());
    assert!(!edge_log::mark_processed(&mut c, "ev-1").await.unwrap());
});

on_both_backends!(
    certificate_rows_are_per_tenant_and_claimed_once,
    |db: Db| async move {
        let (a, b) = two_tenants(&db).await;
        let mut c = db.acquire().await.unwrap();
        assert_eq!(
            certificates::add_missing_tenant_names(&mut c, "pbx.test", 1000)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            certificates::add_missing_tenant_names(&mut c, "pbx.test", 1000)
                .await
                .unwrap(),
            0
        );
        let due = certificates::due(&mut c, 1000, 10).await.unwrap();
        assert_eq!(due.len(), 2);
        // A tenant's name is found under that tenant only.
        assert!(certificates::get(&mut c, a.id, "alpha.pbx.test")
            .await
            .unwrap()
            .is_some());
        assert!(certificates::get(&mut c, b.id, "alpha.pbx.test")
            .await
            .unwrap()
            .is_none());
        // Of two claims on the same due time, one wins.
        assert!(certificates::claim(
            &mut c,
            certificates::Scope::Tenant(a.id),
            "alpha.pbx.test",
            1000,
            5000
        )
        .await
        .unwrap());
        assert!(!certificates::claim(
            &mut c,
            certificates::Scope::Tenant(a.id),
            "alpha.pbx.test",
            1000,
            5000
        )
        .await
        .unwrap());
        assert!(!certificates::claim(
            &mut c,
            certificates::Scope::Tenant(b.id),
            "alpha.pbx.test",
            1000,
            5000
        )
        .await
        .unwrap());
        assert_eq!(certificates::due(&mut c, 1000, 10).await.unwrap().len(), 1);
        // Challenges expire.
        certificates::challenge_put(&mut c, "t", "t.k", 2000)
            .await
            .unwrap();
        assert_eq!(
            certificates::challenge_get(&mut c, "t", 1999)
                .await
                .unwrap()
                .as_deref(),
            Some("t.k")
        );
        assert!(certificates::challenge_get(&mut c, "t", 2000)
            .await
            .unwrap()
            .is_none());
        // The first account stored wins.
        assert_eq!(
            certificates::account_put(&mut c, "https://d", "v1:one", 1)
                .await
                .unwrap(),
            "v1:one"
        );
        assert_eq!(
            certificates::account_put(&mut c, "https://d", "v1:two", 2)
                .await
                .unwrap(),
            "v1:one"
        );
    }
);
on_both_backends!(pbx_objects_are_scoped_by_tenant_and_kind, |db: Db| async move {
    use pbx_objects::Kind;
    let (a, b) = two_tenants(&db).await;
    let mut c = db.acquire().await.unwrap();
    let b_obj = pbx_objects::insert(&mut c, b.id, Kind::RingGroup, "number", "6300", "{}")
        .await
        .unwrap();
    // The same key in another tenant or of another kind is fine; twice is a conflict.
    let a_obj = pbx_objects::insert(&mut c, a.id, Kind::RingGroup, "number", "6300", r#"{"a":1}"#)
        .await
        .unwrap();
    pbx_objects::insert(&mut c, a.id, Kind::Schedule, "time_zone", "6300", "{}")
        .await
        .unwrap();
    let dup = pbx_objects::insert(&mut c, a.id, Kind::RingGroup, "number", "6300", "{}").await;
    assert!(
        matches!(dup, Err(crate::Error::Conflict { ref field, .. }) if field == "number"),
        "{dup:?}"
    );

    assert_eq!(
        pbx_objects::get(&mut c, a.id, Kind::RingGroup, &b_obj.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        pbx_objects::get(&mut c, a.id, Kind::Schedule, &a_obj.id)
            .await
            .unwrap(),
        None
    );
    let got = pbx_objects::get_by_key(&mut c, a.id, Kind::RingGroup, "6300")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.id.as_str(), got.config_json.as_str()),
        (a_obj.id.as_str(), r#"{"a":1}"#)
    );
    assert_eq!(
        pbx_objects::list(&mut c, a.id, Kind::RingGroup)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        pbx_objects::list(&mut c, a.id, Kind::Schedule)
            .await
            .unwrap()
            .len(),
        1
    );

    // Writes through the wrong tenant touch nothing.
    assert_eq!(
        pbx_objects::update(&mut c, a.id, Kind::RingGroup, &b_obj.id, "{}")
            .await
            .unwrap(),
        None
    );
    assert!(!pbx_objects::delete(&mut c, a.id, Kind::RingGroup, &b_obj.id)
        .await
        .unwrap());
    let updated = pbx_objects::update(&mut c, b.id, Kind::RingGroup, &b_obj.id, r#"{"b":2}"#)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.config_json, r#"{"b":2}"#);
    assert!(pbx_objects::delete(&mut c, b.id, Kind::RingGroup, &b_obj.id)
        .await
        .unwrap());
    assert_eq!(
        pbx_objects::list(&mut c, b.id, Kind::RingGroup).await.unwrap(),
        vec![]
    );
    assert_eq!(
        pbx_objects::list(&mut c, a.id, Kind::RingGroup)
            .await
            .unwrap()
            .len(),
        1
    );
});

on_both_backends!(
    custom_domains_are_unique_across_tenants_and_scoped,
    |db: Db| async move {
        use super::domains::{self, Checked, DomainState};
        let (a, b) = two_tenants(&db).await;
        let mut c = db.acquire().await.unwrap();
        let d = domains::insert(&mut c, a.id, "pbx.customer.test", 1000)
            .await
            .unwrap();
        assert_eq!(d.state, DomainState::Pending);
        // Taken, by another tenant or the same one.
        for t in [a.id, b.id] {
            let err = domains::insert(&mut c, t, "pbx.customer.test", 1000)
                .await
                .unwrap_err();
            assert!(matches!(err, crate::error::Error::Conflict { .. }), "{err}");
        }
        // Scoped: tenant b sees nothing of it.
        assert!(domains::get(&mut c, b.id, &d.id).await.unwrap().is_none());
        assert!(domains::list(&mut c, b.id).await.unwrap().is_empty());
        assert!(domains::delete(&mut c, b.id, &d.id).await.unwrap().is_none());
        assert_eq!(domains::list(&mut c, a.id).await.unwrap(), vec![d.clone()]);
        // Due, checked once (a second control plane with the same view loses).
        assert_eq!(domains::due(&mut c, 999, 10).await.unwrap().len(), 0);
        let due = domains::due(&mut c, 1000, 10).await.unwrap();
        assert_eq!(due, vec![d.clone()]);
        let verified = Checked {
            state: DomainState::Verified,
            last_error: None,
            verified_at_ms: Some(1500),
            checked_at_ms: 1500,
            next_check_at_ms: 9000,
        };
        assert!(domains::record_check(&mut c, &due[0], &verified).await.unwrap());
        assert!(!domains::record_check(&mut c, &due[0], &verified).await.unwrap());
        assert_eq!(
            domains::verified_names(&mut c, a.id).await.unwrap(),
            vec!["pbx.customer.test".to_owned()]
        );
        assert!(domains::verified_names(&mut c, b.id).await.unwrap().is_empty());
        // A verified domain gets a certificate row, once.
        assert_eq!(
            certificates::add_missing_domain_names(&mut c, 2000)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            certificates::add_missing_domain_names(&mut c, 2000)
                .await
                .unwrap(),
            0
        );
        assert!(certificates::get(&mut c, a.id, "pbx.customer.test")
            .await
            .unwrap()
            .is_some());
        assert_eq!(certificates::list(&mut c, a.id).await.unwrap().len(), 1);
        // Deleting the domain drops its certificate; the name is free again.
        let gone = domains::delete(&mut c, a.id, &d.id).await.unwrap().unwrap();
        assert_eq!(gone.state, DomainState::Verified);
        assert!(certificates::get(&mut c, a.id, "pbx.customer.test")
            .await
            .unwrap()
            .is_none());
        domains::insert(&mut c, b.id, "pbx.customer.test", 3000)
            .await
            .unwrap();
    }
);

on_both_backends!(platform_certificate_and_dns_records, |db: Db| async move {
    use certificates::Scope;
    let mut c = db.acquire().await.unwrap();
    assert!(certificates::add_platform_name(&mut c, "*.pbx.test", 1000)
        .await
        .unwrap());
    assert!(!certificates::add_platform_name(&mut c, "*.pbx.test", 1000)
        .await
        .unwrap());
    let due = certificates::due(&mut c, 1000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].tenant_id, None);
    assert_eq!(due[0].scope(), Scope::Platform);
    assert!(
        certificates::claim(&mut c, Scope::Platform, "*.pbx.test", 1000, 5000)
            .await
            .unwrap()
    );
    assert!(
        !certificates::claim(&mut c, Scope::Platform, "*.pbx.test", 1000, 5000)
            .await
            .unwrap()
    );
    certificates::store_issued(
        &mut c,
        Scope::Platform,
        "*.pbx.test",
        &certificates::Issued {
            issuer: "CN=test",
            chain_pem: "chain",
            key_sealed: "v1:sealed",
            not_after_ms: 90_000,
            renew_at_ms: 60_000,
        },
        2000,
    )
    .await
    .unwrap();
    let row = certificates::get_scoped(&mut c, Scope::Platform, "*.pbx.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, certificates::CertState::Issued);
    assert_eq!(row.next_attempt_at_ms, 60_000);
    assert_eq!(row.key_context(), "cert-key:platform:*.pbx.test");
    certificates::store_failure(&mut c, Scope::Platform, "*.pbx.test", "boom", 70_000, 3000)
        .await
        .unwrap();
    assert!(
        certificates::schedule_scoped(&mut c, Scope::Platform, "*.pbx.test", 0)
            .await
            .unwrap()
    );
    let row = certificates::get_scoped(&mut c, Scope::Platform, "*.pbx.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.attempts, row.last_error.as_deref(), row.next_attempt_at_ms),
        (1, Some("boom"), 0)
    );
    // DNS-01 TXT values: several per name, until withdrawn or expired.
    let name = "_acme-challenge.pbx.test";
    certificates::dns_record_put(&mut c, name, "b", 5000)
        .await
        .unwrap();
    certificates::dns_record_put(&mut c, name, "a", 9000)
        .await
        .unwrap();
    certificates::dns_record_put(&mut c, "_acme-challenge.other.test", "x", 9000)
        .await
        .unwrap();
    assert_eq!(
        certificates::dns_records(&mut c, name, 1000).await.unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(
        certificates::dns_records(&mut c, name, 6000).await.unwrap(),
        vec!["a"]
    );
    certificates::dns_record_delete(&mut c, name, "a", 1000)
        .await
        .unwrap();
    assert_eq!(
        certificates::dns_records(&mut c, name, 1000).await.unwrap(),
        vec!["b"]
    );
    assert_eq!(
        certificates::dns_records(&mut c, "_acme-challenge.other.test", 1000)
            .await
            .unwrap(),
        vec!["x"]
    );
});

on_both_backends!(contacts_and_groups_are_scoped_by_tenant, |db: Db| async move {
    use super::contacts::{self, ContactFields, ContactFilter, ContactNumber, NumberType};
    let (a, b) = two_tenants(&db).await;
    let mut c = db.acquire().await.unwrap();
    let fields = |name: &str, number: &str| ContactFields {
        name: name.into(),
        company: Some("ACME Corp".into()),
        email: None,
        notes: None,
        numbers: vec![ContactNumber {
            kind: NumberType::Business,
            number: number.into(),
        }],
    };
    let ann = contacts::insert(&mut c, a.id, &fields("Ann", "+1 (555) 0100"), 1)
        .await
        .unwrap();
    let bob = contacts::insert(&mut c, b.id, &fields("Bob", "555-0100"), 1)
        .await
        .unwrap();
    // Each tenant lists and finds its own only, by number digits or by text.
    let by_digits = ContactFilter {
        digits: Some("5550100".into()),
        ..ContactFilter::default()
    };
    let found = contacts::list(&mut c, a.id, &by_digits, 10).await.unwrap();
    assert_eq!(
        found.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        vec![ann.id.as_str()]
    );
    let by_text = ContactFilter {
        text: Some("acme".into()),
        ..ContactFilter::default()
    };
    assert_eq!(
        contacts::list(&mut c, b.id, &by_text, 10).await.unwrap(),
        vec![bob.clone()]
    );
    assert!(contacts::get(&mut c, a.id, &bob.id).await.unwrap().is_none());
    assert!(contacts::update(&mut c, a.id, &bob.id, &fields("X", "1"), 2)
        .await
        .unwrap()
        .is_none());
    assert!(contacts::delete(&mut c, a.id, &bob.id).await.unwrap().is_none());
    assert_eq!(
        contacts::existing_ids(&mut c, a.id, &[ann.id.clone(), bob.id.clone()])
            .await
            .unwrap(),
        vec![ann.id.clone()]
    );
    // Groups: a name is unique per tenant, not across tenants.
    let g = contacts::insert_group(&mut c, a.id, "VIP", std::slice::from_ref(&ann.id), 1)
        .await
        .unwrap();
    assert_eq!(g.contact_ids, vec![ann.id.clone()]);
    assert!(matches!(
        contacts::insert_group(&mut c, a.id, "VIP", &[], 1).await,
        Err(crate::error::Error::Conflict { .. })
    ));
    contacts::insert_group(&mut c, b.id, "VIP", std::slice::from_ref(&bob.id), 1)
        .await
        .unwrap();
    assert!(contacts::get_group(&mut c, b.id, &g.id).await.unwrap().is_none());
    assert!(contacts::delete_group(&mut c, b.id, &g.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        contacts::list_groups(&mut c, a.id).await.unwrap(),
        vec![g.clone()]
    );
    // Deleting the contact empties the group; deleting the group keeps contacts.
    contacts::delete(&mut c, a.id, &ann.id).await.unwrap().unwrap();
    assert!(contacts::get_group(&mut c, a.id, &g.id)
        .await
        .unwrap()
        .unwrap()
        .contact_ids
        .is_empty());
    assert_eq!(contacts::count(&mut c, b.id).await.unwrap(), 1);
    assert_eq!(contacts::count_groups(&mut c, a.id).await.unwrap(), 1);
});

on_both_backends!(
    users_link_to_extensions_of_their_tenant_only,
    |db: Db| async move {
        let (a, b) = two_tenants(&db).await;
        let mut c = db.acquire().await.unwrap();
        let ext = |number| extensions::NewExtension {
            id: ExtensionId::new(),
            number,
            display_name: "x",
            email: None,
            sip_secret_enc: "v1:x",
            recording: pbx_contract::RecordingPolicy::Off,
            ring_timeout_secs: 30,
        };
        let a_ext = extensions::insert(&mut c, a.id, &ext("102")).await.unwrap();
        let b_ext = extensions::insert(&mut c, b.id, &ext("102")).await.unwrap();
        let user = |email| users::NewUser {
            email,
            display_name: "u",
            role: Role::Agent,
            password_hash: None,
            must_change_password: false,
            reseller_id: None,
        };
        let u1 = users::insert(&mut c, Some(a.id), &user("1@x.test"))
            .await
            .unwrap();
        let u2 = users::insert(&mut c, Some(a.id), &user("2@x.test"))
            .await
            .unwrap();
        let ub = users::insert(&mut c, Some(b.id), &user("b@x.test"))
            .await
            .unwrap();
        assert_eq!((u1.extension_id, u1.extension.as_deref()), (None, None));

        // Another tenant's extension, or another tenant's user: nothing changes.
        assert!(!users::set_extension(&mut c, a.id, u1.id, Some(b_ext.id))
            .await
            .unwrap());
        assert!(!users::set_extension(&mut c, a.id, ub.id, Some(a_ext.id))
            .await
            .unwrap());
        assert!(users::set_extension(&mut c, a.id, u1.id, Some(a_ext.id))
            .await
            .unwrap());
        let got = users::get(&mut c, a.id, u1.id).await.unwrap().unwrap();
        assert_eq!(
            (got.extension_id, got.extension.as_deref()),
            (Some(a_ext.id), Some("102"))
        );
        assert_eq!(
            users::get_by_extension(&mut c, a.id, a_ext.id)
                .await
                .unwrap()
                .map(|u| u.id),
            Some(u1.id)
        );
        assert_eq!(
            users::get_by_extension(&mut c, b.id, a_ext.id).await.unwrap(),
            None
        );
        // One user per extension.
        let dup = users::set_extension(&mut c, a.id, u2.id, Some(a_ext.id)).await;
        assert!(
            matches!(dup, Err(crate::Error::Conflict { ref field, .. }) if field == "extension"),
            "{dup:?}"
        );
        // The number shown follows the extension.
        let renumber = extensions::ExtensionPatch {
            number: Some("112"),
            display_name: None,
            email: None,
            sip_secret_enc: None,
            recording: None,
            ring_timeout_secs: None,
        };
        extensions::update(&mut c, a.id, a_ext.id, &renumber)
            .await
            .unwrap();
        let listed = users::list(&mut c, a.id).await.unwrap();
        assert_eq!(
            listed.iter().map(|u| u.extension.as_deref()).collect::<Vec<_>>(),
            vec![Some("112"), None]
        );
        // Unlinked; and the foreign key unlinks a deleted extension as a last resort.
        assert!(users::set_extension(&mut c, a.id, u1.id, None).await.unwrap());
        assert!(users::set_extension(&mut c, a.id, u2.id, Some(a_ext.id))
            .await
            .unwrap());
        assert!(extensions::delete(&mut c, a.id, a_ext.id).await.unwrap());
        let u2 = users::get(&mut c, a.id, u2.id).await.unwrap().unwrap();
        assert_eq!((u2.extension_id, u2.extension), (None, None));
    }
);

on_both_backends!(
    prompts_and_queue_options_are_scoped_by_tenant,
    |db: Db| async move {
        let (a, b) = two_tenants(&db).await;
        let mut c = db.acquire().await.unwrap();
        let new = |key: &'static str| prompts::NewPrompt {
            name: "welcome",
            object_key: key,
            duration_ms: 1500,
            sha256: "ab",
            size_bytes: 24044,
        };
        let row = prompts::insert(&mut c, a.id, &new("a/prompts/welcome-1.wav"))
            .await
            .unwrap();
        assert_eq!(
            (row.name.as_str(), row.duration_ms, row.size_bytes),
            ("welcome", 1500, 24044)
        );
        // the same name in another tenant is fine; twice in one tenant is a conflict on `name`
        prompts::insert(&mut c, b.id, &new("b/prompts/welcome-1.wav"))
            .await
            .unwrap();
        let dup = prompts::insert(&mut c, a.id, &new("a/prompts/welcome-2.wav")).await;
        assert!(
            matches!(dup, Err(crate::Error::Conflict { ref field, .. }) if field == "name"),
            "{dup:?}"
        );
        let replaced = prompts::replace(&mut c, a.id, &new("a/prompts/welcome-2.wav"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(replaced.object_key, "a/prompts/welcome-2.wav");
        assert_eq!(replaced.id, row.id);
        // b's row is untouched
        assert_eq!(
            prompts::get(&mut c, b.id, "welcome")
                .await
                .unwrap()
                .unwrap()
                .object_key,
            "b/prompts/welcome-1.wav"
        );
        let mut other = new("x");
        other.name = "nope";
        assert_eq!(prompts::replace(&mut c, a.id, &other).await.unwrap(), None);
        assert_eq!(prompts::list(&mut c, a.id).await.unwrap().len(), 1);
        assert!(prompts::delete(&mut c, a.id, "welcome").await.unwrap());
        assert!(!prompts::delete(&mut c, a.id, "welcome").await.unwrap());
        assert_eq!(prompts::list(&mut c, a.id).await.unwrap(), vec![]);
        assert_eq!(prompts::list(&mut c, b.id).await.unwrap().len(), 1);

        // queue options: defaults without a row, upsert, per tenant
        use pbx_contract::queue::DynamicAgentDefault;
        assert_eq!(
            queue_options::get(&mut c, a.id).await.unwrap(),
            queue_options::QueueOptionsRow::default()
        );
        let on = queue_options::QueueOptionsRow {
            shared_wrap_up: true,
            dynamic_agent_default: DynamicAgentDefault::LoggedIn,
        };
        queue_options::put(&mut c, a.id, &on).await.unwrap();
        assert_eq!(queue_options::get(&mut c, a.id).await.unwrap(), on);
        assert_eq!(
            queue_options::get(&mut c, b.id).await.unwrap(),
            queue_options::QueueOptionsRow::default()
        );
        let half = queue_options::QueueOptionsRow {
            shared_wrap_up: false,
            ..on
        };
        queue_options::put(&mut c, a.id, &half).await.unwrap();
        assert_eq!(queue_options::get(&mut c, a.id).await.unwrap(), half);
    }
);
