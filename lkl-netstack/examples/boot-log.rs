//! Boots the library kernel with the given command line and prints its log: a
//! debugging aid (`cargo run -p lkl-netstack --example boot-log -- initcall_debug`).

use lkl_netstack::{BootConfig, Kernel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cmdline = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let kernel = Kernel::boot(&BootConfig {
        cmdline,
        ..BootConfig::default()
    })?;
    let log = kernel.kernel_log()?;
    kernel.halt()?;
    std::io::Write::write_all(&mut std::io::stdout(), log.as_bytes())?;
    Ok(())
}
