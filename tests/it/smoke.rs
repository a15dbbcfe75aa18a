use crate::common::*;

#[test]
fn harness_starts_daemon() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let (st, h) = d.get("/health");
    assert_eq!(st, 200);
    assert_eq!(h["status"], "ok");
}
