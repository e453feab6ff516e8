//! The `millrace` command line.

fn main() -> anyhow::Result<()> {
    Ok(())
}
