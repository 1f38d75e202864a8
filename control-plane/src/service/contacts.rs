//! Company contacts and contact groups (SPEC P8; seed 001 企业联系人): the tenant's shared
//! directory. Readable by every member of the tenant, changed by its admins, audited. Not in
//! the edge snapshot.

use super::validate;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{
    self,
    audit::AuditEntry,
    contacts::{self as repo, Contact, ContactFields, ContactFilter, ContactGroup},
};
use crate::error::{Error, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::{IntoParams, ToSchema};

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page `limit` accepts.
pub const MAX_LIMIT: u32 = 500;
/// The most numbers one contact has.
pub const MAX_NUMBERS: usize = 10;
/// The most members one group has.
pub const MAX_GROUP_MEMBERS: usize = 10_000;

/// One page of contacts, by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactPage {
    pub items: Vec<ContactView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next: Option<String>,
}

/// A contact as the API shows it: its id, its fields, and when it was created and changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactView {
    pub id: String,
    pub name: String,
    pub company: Option<String>,
    pub email: Option<String>,
    pub notes: Option<String>,
    pub numbers: Vec<repo::ContactNumber>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Contact> for ContactView {
    fn from(c: Contact) -> Self {
        Self {
            id: c.id,
            name: c.fields.name,
            company: c.fields.company,
            email: c.fields.email,
            notes: c.fields.notes,
            numbers: c.fields.numbers,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The query parameters of the list (documentation; parsed by [`parse_query`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// Search: contacts whose name, company or email contains this (case-insensitive), or,
    /// when it holds digits and nothing but digits and `+*#-(). `, one of whose numbers
    /// contains those digits.
    pub q: Option<String>,
    /// Page size, 1 to 500; default 50.
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub filter: ContactFilter,
    pub limit: u32,
}

/// The input of a contact group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactGroupInput {
    /// 1 to 64 characters, unique in the tenant.
    pub name: String,
    /// Ids of the tenant's contacts (no repeats).
    #[serde(default)]
    pub contact_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactGroupList {
    pub groups: Vec<ContactGroup>,
}

fn encode_cursor(c: &Contact) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}:{}",
        c.id,
        c.fields.name.to_lowercase()
    ))
}

fn decode_cursor(s: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, name_key) = text.split_once(':')?;
    Some((name_key.to_owned(), id.to_owned()))
}

fn is_number_like(q: &str) -> bool {
    q.chars().any(|c| c.is_ascii_digit()) && q.chars().all(|c| c.is_ascii_digit() || "+*#-(). ".contains(c))
}

/// Validates the list's query parameters; an unknown, repeated or malformed one is refused
/// naming it.
pub fn parse_query(pairs: &[(String, String)]) -> Result<ListRequest> {
    let mut seen = HashSet::new();
    let mut req = ListRequest {
        filter: ContactFilter::default(),
        limit: DEFAULT_LIMIT,
    };
    for (key, value) in pairs {
        if !seen.insert(key.as_str()) {
            return Err(Error::invalid(key.clone(), "is given twice"));
        }
        match key.as_str() {
            "q" => {
                let q = value.trim();
                if q.chars().count() > 128 {
                    return Err(Error::invalid("q", "must be at most 128 characters"));
                }
                if !q.is_empty() {
                    req.filter.text = Some(q.to_lowercase());
                    if is_number_like(q) {
                        req.filter.digits = Some(repo::digits(q));
                    }
                }
            }
            "limit" => {
                req.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}")))?;
            }
            "cursor" => {
                req.filter.after = Some(
                    decode_cursor(value)
                        .ok_or_else(|| Error::invalid("cursor", "is not a cursor of this list"))?,
                );
            }
            other => {
                return Err(Error::invalid(
                    other.to_owned(),
                    "is not a parameter of this list",
                ))
            }
        }
    }
    Ok(req)
}

fn optional(field: &str, value: &Option<String>, max: usize) -> Result<Option<String>> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > max => {
            Err(Error::invalid(field, format!("must be at most {max} characters")))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// Checks a contact and normalises it (trimmed; empty optional fields become null).
pub fn validate_contact(input: &ContactFields) -> Result<ContactFields> {
    let name = input.name.trim();
    let len = name.chars().count();
    if len == 0 || len > 128 {
        return Err(Error::invalid("name", "must be 1 to 128 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must not contain control characters"));
    }
    let company = optional("company", &input.company, 128)?;
    if company
        .as_deref()
        .is_some_and(|c| c.chars().any(char::is_control))
    {
        return Err(Error::invalid("company", "must not contain control characters"));
    }
    let email = optional("email", &input.email, 254)?;
    if let Some(e) = &email {
        validate::email("email", e)?;
    }
    let notes = optional("notes", &input.notes, 1000)?;
    if input.numbers.is_empty() || input.numbers.len() > MAX_NUMBERS {
        return Err(Error::invalid(
            "numbers",
            format!("must hold 1 to {MAX_NUMBERS} numbers"),
        ));
    }
    let mut numbers = Vec::with_capacity(input.numbers.len());
    for (i, n) in input.numbers.iter().enumerate() {
        let field = format!("numbers[{i}].number");
        let number = n.number.trim();
        let digit_count = number.chars().filter(char::is_ascii_digit).count();
        let chars_ok = number
            .char_indices()
            .all(|(at, c)| c.is_ascii_digit() || "*#-(). ".contains(c) || (c == '+' && at == 0));
        if !chars_ok || digit_count == 0 || digit_count > 31 || number.len() > 40 {
            return Err(Error::invalid(
                field,
                "must be 1 to 31 digits, with an optional leading + and *#-(). separators",
            ));
        }
        numbers.push(repo::ContactNumber {
            kind: n.kind,
            number: number.to_owned(),
        });
    }
    Ok(ContactFields {
        name: name.to_owned(),
        company,
        email,
        notes,
        numbers,
    })
}

/// Readable by every member of the tenant.
pub async fn list(state: &AppState, ctx: &Ctx, slug: &str, req: &ListRequest) -> Result<ContactPage> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    // One more than asked tells whether there is a next page.
    let mut rows = repo::list(&mut conn, tenant.id, &req.filter, i64::from(req.limit) + 1).await?;
    let more = rows.len() > req.limit as usize;
    rows.truncate(req.limit as usize);
    let next = if more {
        rows.last().map(encode_cursor)
    } else {
        None
    };
    Ok(ContactPage {
        items: rows.into_iter().map(Into::into).collect(),
        next,
    })
}

pub async fn get(state: &AppState, ctx: &Ctx, slug: &str, id: &str) -> Result<ContactView> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    repo::get(&mut conn, tenant.id, id)
        .await?
        .map(Into::into)
        .ok_or(Error::NotFound("contact"))
}

fn audit<'a>(
    tenant: pbx_contract::TenantId,
    action: &'a str,
    entity: &'a str,
    id: &'a str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> AuditEntry<'a> {
    AuditEntry {
        tenant: Some(tenant),
        action,
        entity,
        entity_id: id,
        before,
        after,
    }
}

pub async fn create(state: &AppState, ctx: &Ctx, slug: &str, input: ContactFields) -> Result<ContactView> {
    let fields = validate_contact(&input)?;
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let contact = repo::insert(&mut tx, tenant.id, &fields, db::now_ms()).await?;
    let after = serde_json::to_value(&contact).ok();
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit(tenant.id, "contact.create", "contact", &contact.id, None, after),
    )
    .await?;
    tx.commit().await?;
    Ok(contact.into())
}

pub async fn update(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    id: &str,
    input: ContactFields,
) -> Result<ContactView> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = repo::get(&mut tx, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("contact"))?;
    let fields = validate_contact(&input)?;
    let contact = repo::update(&mut tx, tenant.id, id, &fields, db::now_ms())
        .await?
        .ok_or(Error::NotFound("contact"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit(
            tenant.id,
            "contact.update",
            "contact",
            id,
            serde_json::to_value(&before).ok(),
            serde_json::to_value(&contact).ok(),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(contact.into())
}

/// Deletes a contact; it leaves every group it was in.
pub async fn delete(state: &AppState, ctx: &Ctx, slug: &str, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = repo::delete(&mut tx, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("contact"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit(
            tenant.id,
            "contact.delete",
            "contact",
            id,
            serde_json::to_value(&before).ok(),
            None,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks a group's name and members (which must be the tenant's contacts).
async fn validate_group(
    conn: &mut db::Conn,
    tenant: pbx_contract::TenantId,
    input: &ContactGroupInput,
) -> Result<String> {
    let name = input.name.trim();
    validate::display_name("name", name)?;
    if input.contact_ids.len() > MAX_GROUP_MEMBERS {
        return Err(Error::invalid(
            "contact_ids",
            format!("at most {MAX_GROUP_MEMBERS} members"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, id) in input.contact_ids.iter().enumerate() {
        if !seen.insert(id.as_str()) {
            return Err(Error::invalid(format!("contact_ids[{i}]"), "is listed twice"));
        }
    }
    let found: HashSet<String> = repo::existing_ids(conn, tenant, &input.contact_ids)
        .await?
        .into_iter()
        .collect();
    if let Some(i) = input.contact_ids.iter().position(|id| !found.contains(id)) {
        return Err(Error::invalid(
            format!("contact_ids[{i}]"),
            "is not a contact of this tenant",
        ));
    }
    Ok(name.to_owned())
}

pub async fn list_groups(state: &AppState, ctx: &Ctx, slug: &str) -> Result<ContactGroupList> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    Ok(ContactGroupList {
        groups: repo::list_groups(&mut conn, tenant.id).await?,
    })
}

pub async fn get_group(state: &AppState, ctx: &Ctx, slug: &str, id: &str) -> Result<ContactGroup> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    repo::get_group(&mut conn, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("contact group"))
}

pub async fn create_group(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    input: ContactGroupInput,
) -> Result<ContactGroup> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let name = validate_group(&mut tx, tenant.id, &input).await?;
    let group = repo::insert_group(&mut tx, tenant.id, &name, &input.contact_ids, db::now_ms()).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit(
            tenant.id,
            "contact_group.create",
            "contact_group",
            &group.id,
            None,
            serde_json::to_value(&group).ok(),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(group)
}

/// Renames the group and replaces its members.
pub async fn update_group(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    id: &str,
    input: ContactGroupInput,
) -> Result<ContactGroup> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = repo::get_group(&mut tx, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("contact group"))?;
    let name = validate_group(&mut tx, tenant.id, &input).await?;
    let group = repo::update_group(&mut tx, tenant.id, id, &name, &input.contact_ids, db::now_ms())
        .await?
        .ok_or(Error::NotFound("contact group"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit(
            tenant.id,
            "contact_group.update",
            "contact_group",
            id,
            serde_json::to_value(&before).ok(),
            serde_json::to_value(&group).ok(),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(group)
}

/// Deletes the group; its contacts stay.
pub async fn delete_group(state: &AppState, ctx: &Ctx, slug: &str, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = repo::delete_group(&mut tx, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("contact group"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit(
            tenant.id,
            "contact_group.delete",
            "contact_group",
            id,
            serde_json::to_value(&before).ok(),
            None,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use repo::{ContactNumber, NumberType};

    fn contact(name: &str, numbers: &[&str]) -> ContactFields {
        ContactFields {
            name: name.into(),
            company: None,
            email: None,
            notes: None,
            numbers: numbers
                .iter()
                .map(|n| ContactNumber {
                    kind: NumberType::Mobile,
                    number: (*n).into(),
                })
                .collect(),
        }
    }

    fn field(c: &ContactFields) -> Option<String> {
        match validate_contact(c) {
            Err(Error::Invalid { field, .. }) => Some(field),
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        }
    }

    #[test]
    fn contact_rules() {
        let ok = validate_contact(&ContactFields {
            company: Some("  ".into()),
            email: Some(" ann@example.com ".into()),
            ..contact("  Ann Lee ", &[" +86 (592) 550-3309 ", "*99#"])
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.name, "Ann Lee");
        assert_eq!(ok.company, None, "blank becomes null");
        assert_eq!(ok.email.as_deref(), Some("ann@example.com"));
        assert_eq!(ok.numbers[0].number, "+86 (592) 550-3309");
        assert_eq!(field(&contact("李雷", &["1001"])), None);
        assert_eq!(field(&contact("", &["1"])).as_deref(), Some("name"));
        assert_eq!(field(&contact(&"x".repeat(129), &["1"])).as_deref(), Some("name"));
        assert_eq!(field(&contact("A", &[])).as_deref(), Some("numbers"));
        let eleven: Vec<&str> = vec!["1"; 11];
        assert_eq!(field(&contact("A", &eleven)).as_deref(), Some("numbers"));
        for bad in ["", "abc", "1+2", "++1", "1;2", &"1".repeat(32)] {
            assert_eq!(
                field(&contact("A", &["100", bad])).as_deref(),
                Some("numbers[1].number"),
                "{bad:?}"
            );
        }
        let bad_mail = ContactFields {
            email: Some("not-mail".into()),
            ..contact("A", &["1"])
        };
        assert_eq!(field(&bad_mail).as_deref(), Some("email"));
        let long_notes = ContactFields {
            notes: Some("n".repeat(1001)),
            ..contact("A", &["1"])
        };
        assert_eq!(field(&long_notes).as_deref(), Some("notes"));
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_rules() {
        let r = parse_query(&pairs(&[("q", " Ann ")])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.filter.text.as_deref(), Some("ann"));
        assert_eq!(r.filter.digits, None);
        assert_eq!(r.limit, DEFAULT_LIMIT);
        let r = parse_query(&pairs(&[("q", "+86 592-55"), ("limit", "5")])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.filter.digits.as_deref(), Some("8659255"));
        assert_eq!(r.limit, 5);
        let err = |p: &[(&str, &str)]| match parse_query(&pairs(p)) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(&[("limit", "0")]), "limit");
        assert_eq!(err(&[("limit", "501")]), "limit");
        assert_eq!(err(&[("cursor", "!!")]), "cursor");
        assert_eq!(err(&[("sort", "x")]), "sort");
        assert_eq!(err(&[("q", "a"), ("q", "b")]), "q");
    }
}
