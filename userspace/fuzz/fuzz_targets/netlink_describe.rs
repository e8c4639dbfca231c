//! Any request and reply bytes: describing them must never panic.
#![no_main]

use cniscope::netlink::{NlRequest, describe::describe, names::Names};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize % (data.len().max(1));
    let (request, reply) = data.split_at(split);
    let req = NlRequest {
        ts_ns: 0,
        pid: 0,
        tgid: 0,
        comm: String::new(),
        netns: 0,
        task_netns: 0,
        target_netns: None,
        peer_netns: None,
        sk: 0,
        plugin_tree: false,
        sendto: false,
        request_total: request.len() as u32,
        request: request.to_vec(),
        request_cut: split % 2 == 0,
        reply: reply.to_vec(),
        extack: None,
    };
    let _ = describe(&req, &mut Names::default());
});
