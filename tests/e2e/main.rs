//! End-to-end tests of the real `pbx` binary (filled in below).
