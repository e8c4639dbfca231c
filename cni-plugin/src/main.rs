//! The `cniscope-cni` binary: read stdin, run, print the reply once, exit.

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    // A runtime always gives a config on stdin; VERSION may come with none at all.
    if let Err(e) = std::io::stdin().take(16 << 20).read_to_end(&mut stdin) {
        eprintln!("cniscope-cni: reading stdin: {e}");
    }
    let reply = cniscope_cni::plugin::run(&cniscope_cni::ProcessPlatform, &stdin);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&reply.stdout).and_then(|()| out.flush()) {
        eprintln!("cniscope-cni: writing stdout: {e}");
        std::process::exit(if reply.exit_code == 0 {
            1
        } else {
            reply.exit_code
        });
    }
    std::process::exit(reply.exit_code);
}
