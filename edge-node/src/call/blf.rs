//! BLF of queue agents' pause state (SPEC Q9; seed 001, "允许坐席通过 IP 话机管理其坐席状态"):
//! a phone's BLF key subscribes (RFC 6665, event package `dialog`, RFC 4235) to a resource
//! named like the pause feature code, `*07{ext}*{queue}` or `*07{ext}*{queue}*{code}`; the
//! key lights (a `confirmed` dialog) while that agent is paused in that queue (with that pause
//! reason, when the resource names one) and goes dark (`terminated`) otherwise. Pressing the
//! key dials the same code, which toggles the pause.
//!
//! Subscriptions live in memory on the edge that accepted them (a phone re-subscribes within
//! its expiry, so an edge restart heals itself); each state change of a paused agent NOTIFYs
//! the subscriptions that name it.

use super::dialog::Dialog;
use crate::sip::message::{Method, SipRequest};
use crate::sip::server::{SipClient, Target};
use pbx_contract::TenantId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Expiry granted when the SUBSCRIBE asks for none, and the bounds of what is granted.
pub const DEFAULT_EXPIRES: u32 = 3600;
pub const MIN_EXPIRES: u32 = 60;
pub const MAX_EXPIRES: u32 = 3600;

/// What a BLF resource watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlfResource {
    pub agent: String,
    pub queue: String,
    /// `*03`: lit only for that pause reason; None: lit for any pause.
    pub reason_code: Option<String>,
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `*07{ext}*{queue}[*{code}]` (seed 001 line 809: "暂停特征码 + 分机号码 + * + 队列号码 + 暂停原因特征码").
pub fn parse_resource(user: &str) -> Option<BlfResource> {
    let rest = user.strip_prefix("*07")?;
    let mut parts = rest.split('*');
    let agent = parts.next().filter(|p| digits(p))?;
    let queue = parts.next().filter(|p| digits(p))?;
    let reason_code = match parts.next() {
        Some(code) if digits(code) => Some(format!("*{code}")),
        Some(_) => return None,
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(BlfResource {
        agent: agent.to_owned(),
        queue: queue.to_owned(),
        reason_code,
    })
}

/// Whether the key is lit, given the agent's pause in the queue (`Some(code)` when paused).
pub fn lit(resource: &BlfResource, pause: Option<Option<&str>>) -> bool {
    match (pause, &resource.reason_code) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(code), Some(want)) => {
            code.is_some_and(|c| c.trim_start_matches('*') == want.trim_start_matches('*'))
        }
    }
}

/// The `application/dialog-info+xml` body (RFC 4235 §4) for one resource.
pub fn dialog_info(entity: &str, id: &str, version: u32, lit: bool) -> String {
    let state = if lit { "confirmed" } else { "terminated" };
    format!(
        "<?xml version=\"1.0\"?>\r\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{version}\" state=\"full\" entity=\"{entity}\">\r\n<dialog id=\"{id}\" direction=\"recipient\"><state>{state}</state></dialog>\r\n</dialog-info>\r\n"
    )
}

/// One accepted subscription.
pub(crate) struct Subscription {
    pub tenant: TenantId,
    pub resource: BlfResource,
    /// `sip:{resource}@{fqdn}`.
    pub entity: String,
    pub id: String,
    pub dialog: Dialog,
    pub target: Target,
    pub expires_at: Instant,
    pub version: u32,
    /// What the last NOTIFY said: a change notifies only when the key's light changes.
    pub last_lit: Option<bool>,
}

impl Subscription {
    /// The NOTIFY carrying the current state (and the end of the subscription when `last`).
    pub fn notify(&mut self, lit_now: bool, last: bool) -> SipRequest {
        let left = self
            .expires_at
            .saturating_duration_since(Instant::now())
            .as_secs();
        let state = if last || left == 0 {
            "terminated;reason=timeout".to_owned()
        } else {
            format!("active;expires={left}")
        };
        let body = dialog_info(&self.entity, &self.id, self.version, lit_now);
        self.version += 1;
        self.last_lit = Some(lit_now);
        let mut req = self.dialog.request(
            Method::Notify,
            Some(("application/dialog-info+xml", body.into_bytes())),
        );
        req.headers.push("Event", "dialog");
        req.headers.push("Subscription-State", state);
        req
    }
}

/// The edge's BLF subscriptions, by (Call-ID, our tag).
#[derive(Default)]
pub(crate) struct BlfRegistry {
    subs: Mutex<HashMap<(String, String), Subscription>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BlfRegistry {
    pub fn insert(&self, sub: Subscription) {
        let key = (sub.dialog.call_id.clone(), sub.dialog.local_tag.clone());
        lock(&self.subs).insert(key, sub);
    }

    /// Applies `f` to the subscription of this dialog.
    pub fn with<R>(
        &self,
        call_id: &str,
        local_tag: &str,
        f: impl FnOnce(&mut Subscription) -> R,
    ) -> Option<R> {
        let mut subs = lock(&self.subs);
        subs.get_mut(&(call_id.to_owned(), local_tag.to_owned())).map(f)
    }

    pub fn remove(&self, call_id: &str, local_tag: &str) {
        lock(&self.subs).remove(&(call_id.to_owned(), local_tag.to_owned()));
    }

    /// NOTIFYs (with their targets) for every live subscription to this agent's keys in this
    /// queue, after its pause state changed; expired subscriptions are dropped.
    pub fn changed(
        &self,
        tenant: TenantId,
        agent: &str,
        queue: &str,
        pause: Option<Option<&str>>,
    ) -> Vec<(SipRequest, Target)> {
        let now = Instant::now();
        let mut subs = lock(&self.subs);
        subs.retain(|_, s| s.expires_at > now);
        subs.values_mut()
            .filter(|s| s.tenant == tenant && s.resource.agent == agent && s.resource.queue == queue)
            .filter_map(|s| {
                let on = lit(&s.resource, pause);
                (s.last_lit != Some(on)).then(|| (s.notify(on, false), s.target.clone()))
            })
            .collect()
    }
}

/// Sends NOTIFYs; their answers do not matter (a 481 means the phone forgot the
/// subscription, which then lapses).
pub(crate) async fn send_all(client: &SipClient, notifies: Vec<(SipRequest, Target)>) {
    for (req, target) in notifies {
        drop(client.request(req, &target).await);
    }
}

/// The expiry to grant for a requested one.
pub fn granted_expires(requested: Option<u32>) -> u32 {
    match requested {
        Some(0) => 0,
        Some(e) => e.clamp(MIN_EXPIRES, MAX_EXPIRES),
        None => DEFAULT_EXPIRES,
    }
}

pub fn expiry(secs: u32) -> Instant {
    Instant::now() + Duration::from_secs(u64::from(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_name_agent_queue_and_reason() {
        assert_eq!(
            parse_resource("*071001*6400*01"),
            Some(BlfResource {
                agent: "1001".into(),
                queue: "6400".into(),
                reason_code: Some("*01".into())
            })
        );
        assert_eq!(parse_resource("*071001*6400").map(|r| r.reason_code), Some(None));
        for bad in [
            "*071001",
            "*07*6400",
            "*071001*6400*",
            "*071001*6400*01*2",
            "1001",
            "*7x*1",
            "*071001*64a0",
        ] {
            assert_eq!(parse_resource(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_key_lights_for_its_pause() {
        let any = parse_resource("*071001*6400").unwrap();
        let lunch = parse_resource("*071001*6400*01").unwrap();
        assert!(!lit(&any, None));
        assert!(lit(&any, Some(None)));
        assert!(lit(&any, Some(Some("*02"))));
        assert!(!lit(&lunch, Some(None)));
        assert!(!lit(&lunch, Some(Some("*02"))));
        assert!(lit(&lunch, Some(Some("*01"))));
        assert!(
            lit(&lunch, Some(Some("01"))),
            "a code configured without its star"
        );
    }

    #[test]
    fn dialog_info_says_confirmed_or_terminated() {
        let on = dialog_info("sip:*071001*6400@acme.example", "blf", 3, true);
        assert!(
            on.contains("version=\"3\"") && on.contains("<state>confirmed</state>"),
            "{on}"
        );
        assert!(dialog_info("e", "i", 0, false).contains("<state>terminated</state>"));
        assert_eq!(granted_expires(None), DEFAULT_EXPIRES);
        assert_eq!(granted_expires(Some(5)), MIN_EXPIRES);
        assert_eq!(granted_expires(Some(90_000)), MAX_EXPIRES);
        assert_eq!(granted_expires(Some(0)), 0);
    }
}
