//! `nestdnn` command-line tool (placeholder; subcommands are added per module).
fn main() {}
