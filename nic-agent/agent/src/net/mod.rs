//! Network services the agent builds from the library kernel's own features, configured
//! by netlink: tenants as VRFs ([`tenant`]), anti-spoofing per port ([`antispoof`]) and
//! SNAT/DNAT ([`nat`]) as nf_tables rules written with our own encoder ([`nft`]), and the
//! conntrack table read back through ctnetlink ([`conntrack`]).

pub mod antispoof;
pub mod conntrack;
pub mod nat;
pub mod nft;
pub mod tenant;

pub use tenant::{Tenant, vrf_name};
