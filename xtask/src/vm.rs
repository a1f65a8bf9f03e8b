//! Boots Debian 12's 6.1 kernel under qemu and runs the kernel-side tests there
//! (issue: the oldest supported kernel). Not written yet.

#[derive(clap::Args, Default)]
pub struct VmArgs {}

pub fn vm_test(_args: VmArgs) -> anyhow::Result<()> {
    anyhow::bail!("the 6.1 VM test is not written yet")
}
