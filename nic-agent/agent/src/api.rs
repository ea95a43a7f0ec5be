//! The control API: JSON lines on a unix socket. Its wire types and the client [`call`]
//! live in the `knic-api` crate (which links no GPL code, for clients such as `knic-cni`);
//! the server side is a subscriber of the agent's event loop (`control`), so requests are
//! handled one at a time on the control thread, never on a data-path thread.

pub use knic_api::{CallError, MAX_REQUEST_LEN, Request, Response, call};
