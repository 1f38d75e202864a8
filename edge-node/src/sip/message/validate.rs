//! Request checks a UAS/registrar makes before acting (RFC 3261 §8.2, RFC 4475 §3.1.2/§3.3).

use super::headers::HeaderError;
use super::{Method, SipRequest};

/// Why a parsed request is refused. [`InvalidReason::status`] gives the response code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    #[error("SIP version {0} not supported")]
    UnsupportedVersion(String),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMethodMismatch { method: String, cseq: String },
    #[error("Content-Length {declared} is larger than the body ({actual} octets)")]
    ContentLengthExceedsBody { declared: u32, actual: usize },
    #[error("Request-URI carries URI headers")]
    RequestUriHeaders,
    #[error("Contact expires parameter is not a valid delta-seconds")]
    ContactExpires,
    #[error("REGISTER To/From must be a SIP or SIPS URI")]
    RegisterNonSipAor,
}

impl InvalidReason {
    /// The status to answer with: 505 for the version, 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            InvalidReason::UnsupportedVersion(_) => 505,
            _ => 400,
        }
    }
}

/// Checks what the parser lets through. Headers the request does not use (Date, Accept,
/// unknown ones) are not looked at.
pub fn validate(req: &SipRequest) -> Result<(), InvalidReason> {
    if req.version != "SIP/2.0" {
        return Err(InvalidReason::UnsupportedVersion(req.version.clone()));
    }
    // mandatory, single-valued (§8.1.1): each accessor checks missing / repeated / malformed
    let to = req.to_ref()?;
    let from = req.from_ref()?;
    req.call_id()?;
    let cseq = req.cseq_ref()?;
    req.headers.check_vias()?;
    req.max_forwards()?;
    req.expires()?;
    let declared = req.content_length()?;

    if cseq.method != req.method {
        return Err(InvalidReason::CSeqMethodMismatch {
            method: req.method.to_string(),
            cseq: cseq.method.to_string(),
        });
    }
    if let Some(declared) = declared {
        if declared as usize > req.body.len() {
            return Err(InvalidReason::ContentLengthExceedsBody {
                declared,
                actual: req.body.len(),
            });
        }
    }
    // §19.1.5: headers are not allowed in a Request-URI
    if req.uri.is_sip() && !req.uri.headers.is_empty() {
        return Err(InvalidReason::RequestUriHeaders);
    }
    let contacts = req.contacts_ref()?;
    if contacts.iter().any(|c| c.expires() == Some(None)) {
        return Err(InvalidReason::ContactExpires);
    }
    // §10.2: To and From of a REGISTER name an address-of-record, a SIP or SIPS URI
    if req.method == Method::Register && !(to.uri.is_sip() && from.uri.is_sip()) {
        return Err(InvalidReason::RegisterNonSipAor);
    }
    Ok(())
}
