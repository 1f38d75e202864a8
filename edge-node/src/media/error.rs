//! The media layer's one error type.

/// Everything that can go wrong in SDP handling, the relay, recording and the spool.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The SDP body does not parse (RFC 4566 syntax).
    #[error("malformed SDP: {0}")]
    Sdp(String),

    /// The offer has no audio stream we can relay: no RTP/AVP audio with PCMU or PCMA.
    #[error("no supported audio codec (PCMU or PCMA over RTP/AVP) in the SDP")]
    NoSupportedCodec,

    /// Every RTP port pair of the configured range is in use.
    #[error("no free RTP port pair in {min}-{max}")]
    PortsExhausted { min: u16, max: u16 },

    /// The media configuration is unusable (empty port range...).
    #[error("invalid media configuration: {0}")]
    Config(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The session was closed already.
    #[error("the relay session is closed")]
    SessionClosed,

    /// The relay's threads have stopped (the relay was dropped or a thread failed).
    #[error("the media relay has stopped")]
    RelayStopped,

    /// `start_recording` was called twice on one session.
    #[error("the session is already being recorded")]
    AlreadyRecording,

    /// The recording's object key would be refused by the object store.
    #[error("invalid recording object key {0:?}")]
    InvalidObjectKey(String),
}

impl MediaError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MediaError::Io {
            context: context.into(),
            source,
        }
    }

    /// The SIP status a B2BUA should answer an INVITE with when this error stops the call:
    /// 488 for an offer we cannot serve, 400 for an unparsable body, 503 when out of ports,
    /// 500 otherwise.
    pub fn sip_status(&self) -> u16 {
        match self {
            MediaError::NoSupportedCodec => 488,
            MediaError::Sdp(_) => 400,
            MediaError::PortsExhausted { .. } => 503,
            _ => 500,
        }
    }
}
