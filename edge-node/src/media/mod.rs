//! Media (SPEC T4, T8): SDP offer/answer for the B2BUA, the RTP relay with latching, call
//! recording into a local spool, and the uploader that moves recordings to the object store.
//!
//! - [`sdp`]: parse an SDP, find where a side wants RTP and whether it holds, and rewrite an
//!   offer or answer so that media flows through us ([`SessionDescription::relay_offer`],
//!   [`SessionDescription::relay_answer`]).
//! - [`relay`]: [`MediaRelay`] and its [`RelaySession`]s; the per-packet logic lives in
//!   [`rtp`] (latching, loss counting) without I/O.
//! - [`recording`] and [`wav`]: the recorder; [`spool`]: the [`RecordingUploader`].
//!
//! How a B2BUA uses it: on an INVITE with offer O, `open_session()`, `set_peer(A,
//! O.audio_endpoint())`, send `O.relay_offer(advertise_ip, port(B), &mut origin_b)` to the
//! callee; on its answer N, `set_peer(B, N.audio_endpoint())` and send
//! `N.relay_answer(advertise_ip, port(A), &mut origin_a)` to the caller; on a re-INVITE the
//! same with `set_peer` again (it re-opens latching); `close()` at the end.
//!
//! # Recording format
//!
//! One WAV file per recorded session: PCM, 16-bit signed little-endian, 8,000 Hz, **stereo**.
//! The **left** channel is what leg A (the caller) sent, the **right** channel what leg B (the
//! callee) sent. PCMU (payload type 0) and PCMA (8) are decoded (ITU-T G.711); telephone-event
//! and any other payload type are not recorded. Samples are placed by RTP timestamp: each
//! stream's first packet sits at its wall-clock arrival time since recording started, later
//! ones at their timestamp offset from it, so lost packets leave silence and both channels stay
//! aligned in time (a stream whose timestamps stray more than 0.5 s from its arrival times, or
//! that changes SSRC, is re-anchored on arrival time). The file is written as the call goes
//! (about 1 s is buffered per call), as `{name}.wav.part`, and renamed to `{name}.wav` with a
//! sidecar `{name}.json` (object key, tenant, call id, start) when the session closes; see
//! [`recording`] for the spool layout and crash recovery. Object key:
//! [`recording_key`], `{tenant}/recordings/{yyyy}/{mm}/{dd}/{call_id}.wav`.

mod error;
pub mod g711;
pub mod player;
pub mod prompt_cache;
pub mod prompts;
pub mod recording;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod spool;
pub mod wav;

#[cfg(test)]
mod tests;

pub use error::MediaError;
pub use player::{Playback, Prompt, PromptError};
pub use prompt_cache::PromptCache;
pub use recording::{recording_key, RecordingMeta};
pub use relay::{Leg, MediaEvent, MediaRelay, RelayOptions, RelaySession, RelayStats, SessionStats};
pub use sdp::{Direction, SdpOrigin, SessionDescription};
pub use spool::RecordingUploader;

use std::net::IpAddr;
use std::path::PathBuf;

/// Where the relay binds, what it advertises, its port range and its recording spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// The local address RTP sockets bind to.
    pub bind_ip: IpAddr,
    /// The address put into our SDP (the public one when behind 1:1 NAT).
    pub advertise_ip: IpAddr,
    /// The RTP port range, inclusive; each leg takes an even port and the odd one after it.
    pub port_min: u16,
    pub port_max: u16,
    /// Recordings are written here until the uploader has put them into the object store.
    pub spool_dir: PathBuf,
}
