//! Who is calling: JWT access tokens, API keys, and the rules of what each role may touch.

pub mod access;
pub mod principal;
pub mod tokens;

pub use access::TenantAccess;
pub use principal::{Ctx, Principal};
