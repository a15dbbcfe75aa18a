//! Service files and lifecycle commands: systemd units verified by systemd-analyze, the
//! launchd plist parsed by plistlib, the Task Scheduler XML parsed as XML, installs into a
//! temp HOME, contrib/ kept in step with the generators, and status/stop against a real
//! daemon.

use crate::common::*;
use std::path::Path;
use std::process::Command;

const BIN_PLACEHOLDER: &str = "/usr/local/bin/bog-agents-daemon";
const WIN_PLACEHOLDER: &str = r"C:\Program Files\bog-agents-daemon\bog-agents-daemon.exe";

fn run_with_home(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("HOME", home)
        .env_remove("BOG_AGENTS_HOME")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn python(script: &str, arg: &Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(arg)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let t = tempdir();
    for (name, args) in [
        ("user", vec!["install-systemd", "--print"]),
        (
            "system",
            vec!["install-systemd", "--system", "--run-as", "root", "--print"],
        ),
        (
            "datadir",
            vec![
                "--data-dir",
                "/srv/bog agents",
                "install-systemd",
                "--print",
                "--port",
                "9000",
            ],
        ),
    ] {
        let (code, unit, err) = run_with_home(t.path(), &args);
        assert_eq!(code, 0, "{err}");
        let dir = t.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bog-agents-daemon.service");
        std::fs::write(&p, &unit).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&p)
            .output()
            .expect("systemd-analyze (package systemd; .ci/run installs it)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}\n{unit}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            unit.contains(&format!("ExecStart={BIN} run")) || unit.contains("ExecStart=\""),
            "{unit}"
        );
        assert!(unit.contains("Restart=on-failure") && unit.contains("KillMode=mixed"));
    }
    // The verifier really checks: a unit with a missing binary fails.
    let bad = t.path().join("bad/bog-agents-daemon.service");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    let (_, unit, _) = run_with_home(
        t.path(),
        &["install-systemd", "--print", "--binary", "/nonexistent/bog"],
    );
    std::fs::write(&bad, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success() || !out.stderr.is_empty());
}

#[test]
fn launchd_plist_and_windows_xml_parse() {
    let t = tempdir();
    let (code, plist, _) =
        run_with_home(t.path(), &["install-launchd", "--print", "--port", "8123"]);
    assert_eq!(code, 0);
    let p = t.path().join("x.plist");
    std::fs::write(&p, plist).unwrap();
    let got = python(
        "import plistlib,sys,json; d=plistlib.load(open(sys.argv[1],'rb')); print(json.dumps(d))",
        &p,
    );
    let d: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(d["Label"], "com.bogware.bog-agents-daemon");
    assert_eq!(
        d["ProgramArguments"],
        serde_json::json!([BIN, "run", "--port", "8123"])
    );
    assert_eq!(d["RunAtLoad"], true);
    assert_eq!(d["KeepAlive"]["SuccessfulExit"], false);
    assert!(d["StandardErrorPath"]
        .as_str()
        .unwrap()
        .starts_with(t.path().to_str().unwrap()));
    assert!(d["EnvironmentVariables"]["PATH"]
        .as_str()
        .unwrap()
        .contains("/usr/bin"));

    // The Windows task: written as UTF-16 with a BOM, parsed by an XML parser.
    let data = t.path().join("data");
    let (code, out, err) = run_with_home(
        t.path(),
        &["--data-dir", data.to_str().unwrap(), "install-windows-task"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("schtasks /Create /XML"), "{out}");
    let xml = data.join("bog-agents-daemon-task.xml");
    assert_eq!(&std::fs::read(&xml).unwrap()[..2], &[0xFF, 0xFE]);
    let got = python(
        "import sys,xml.etree.ElementTree as E; n={'t':'http://schemas.microsoft.com/windows/2004/02/mit/task'}; r=E.parse(sys.argv[1]).getroot(); \
         print(r.find('t:Settings/t:RestartOnFailure/t:Count',n).text, r.find('t:Settings/t:RestartOnFailure/t:Interval',n).text, \
         r.find('t:Settings/t:ExecutionTimeLimit',n).text, r.find('t:Triggers/t:LogonTrigger/t:Enabled',n).text, r.find('t:Actions/t:Exec/t:Arguments',n).text)",
        &xml,
    );
    assert_eq!(
        got.trim(),
        format!("999 PT1M PT0S true run --data-dir {}", data.display())
    );
    // --print writes UTF-8 text, and says so: an XML parser reads it as printed.
    let (code, printed, err) = run_with_home(t.path(), &["install-windows-task", "--print"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        printed.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{printed}"
    );
    let p = t.path().join("printed.xml");
    std::fs::write(&p, &printed).unwrap();
    let got = python(
        "import sys,xml.etree.ElementTree as E; n={'t':'http://schemas.microsoft.com/windows/2004/02/mit/task'}; r=E.parse(sys.argv[1]).getroot(); \
         print(r.find('t:Settings/t:RestartOnFailure/t:Count',n).text)",
        &p,
    );
    assert_eq!(got.trim(), "999");
    let (code, _, _) = run_with_home(
        t.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "uninstall-windows-task",
        ],
    );
    assert_eq!(code, 0);
    assert!(!xml.exists());
}

#[test]
fn install_systemd_user_into_home_is_idempotent_and_uninstalls() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempdir();
    let unit = t
        .path()
        .join(".config/systemd/user/bog-agents-daemon.service");
    let (code, out, err) = run_with_home(t.path(), &["install-systemd", "--user"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("systemctl --user enable --now bog-agents-daemon"),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&unit).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let first = std::fs::read_to_string(&unit).unwrap();
    let (code, out, _) = run_with_home(t.path(), &["install-systemd"]);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), first);
    let (code, _, _) = run_with_home(t.path(), &["uninstall-systemd"]);
    assert_eq!(code, 0);
    assert!(!unit.exists());
    // launchd too.
    let plist = t
        .path()
        .join("Library/LaunchAgents/com.bogware.bog-agents-daemon.plist");
    assert_eq!(run_with_home(t.path(), &["install-launchd"]).0, 0);
    assert_eq!(
        std::fs::metadata(&plist).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(run_with_home(t.path(), &["uninstall-launchd"]).0, 0);
    assert!(!plist.exists());
    // --print touches nothing.
    assert_eq!(
        run_with_home(t.path(), &["install-systemd", "--print"]).0,
        0
    );
    assert!(!unit.exists());
}

#[test]
fn contrib_files_match_the_generators() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = Path::new("/home/you");
    let (_, unit, _) = run_with_home(
        home,
        &["install-systemd", "--print", "--binary", BIN_PLACEHOLDER],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("contrib/systemd/bog-agents-daemon.service")).unwrap(),
        unit,
        "contrib/systemd drifted: regenerate with `HOME=/home/you bog-agents-daemon install-systemd --print --binary {BIN_PLACEHOLDER}`"
    );
    let (_, plist, _) = run_with_home(
        Path::new("/Users/you"),
        &["install-launchd", "--print", "--binary", BIN_PLACEHOLDER],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("contrib/launchd/com.bogware.bog-agents-daemon.plist"))
            .unwrap(),
        plist,
        "contrib/launchd drifted"
    );
    let (_, xml, _) = run_with_home(
        home,
        &[
            "install-windows-task",
            "--print",
            "--binary",
            WIN_PLACEHOLDER,
        ],
    );
    let bytes = std::fs::read(root.join("contrib/windows/bog-agents-daemon.xml")).unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xFE]);
    let units: Vec<u16> = bytes[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16(&units).unwrap().replace("\r\n", "\n");
    // The file for schtasks is UTF-16 and declares it; --print is UTF-8 and declares that.
    assert_eq!(
        text.replacen("encoding=\"UTF-16\"", "encoding=\"UTF-8\"", 1),
        xml,
        "contrib/windows drifted: regenerate with `install-windows-task --data-dir DIR --binary '{WIN_PLACEHOLDER}'` and copy DIR/bog-agents-daemon-task.xml"
    );
    python(
        "import sys,xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        &root.join("contrib/windows/bog-agents-daemon.xml"),
    );
}

#[test]
fn installers_create_the_data_dir_0700() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let t = tempdir();
    assert_eq!(run_with_home(t.path(), &["install-launchd"]).0, 0);
    assert_eq!(mode(&t.path().join(".bog-agents/daemon")), 0o700);
    let data = t.path().join("win/data");
    let (code, _, err) = run_with_home(
        t.path(),
        &["--data-dir", data.to_str().unwrap(), "install-windows-task"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&data), 0o700);
}

#[test]
fn status_and_stop_against_a_real_daemon() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    let (code, out, _) = cli(&d.dir, &["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("pid {}", d.pid())) && out.contains("jobs: 0"),
        "{out}"
    );
    d.create(&sh_job("drain", "sleep 0.5; echo drained", idle_trigger()));
    let (_, v) = d.post("/jobs/drain/run", &serde_json::json!({}));
    let id = v["run_id"].as_str().unwrap().to_string();
    d.wait_run("drain", 20, "running", |r| {
        r["id"] == id.as_str() && r["status"] == "running"
    });
    let (code, out, err) = cli(&d.dir, &["stop", "--timeout", "30"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(d.wait_exit(10).code(), Some(0));
    let (code, out, _) = cli(&d.dir, &["status"]);
    assert_eq!(
        code, 1,
        "a cleanly stopped daemon is not a stale lock: {out}"
    );
    assert_eq!(
        cli(&d.dir, &["stop"]).0,
        0,
        "stopping a stopped daemon is fine"
    );
    let mut d2 = Daemon::start(t.path(), &[]);
    let (_, r) = d2.get(&format!("/jobs/drain/runs/{id}"));
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "drained\n");
    d2.kill9();
    let (code, out, _) = cli(&d2.dir, &["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("stale"), "{out}");
}

#[test]
fn installers_follow_config_json() {
    let t = tempdir();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.json"),
        r#"{"port": 9001, "bind": "0.0.0.0", "grace_seconds": 120}"#,
    )
    .unwrap();
    let d = data.to_str().unwrap();
    let (code, unit, err) =
        run_with_home(t.path(), &["--data-dir", d, "install-systemd", "--print"]);
    assert_eq!(code, 0, "{err}");
    // Longer than the grace plus the 5 s SIGTERM->SIGKILL step of the agents.
    assert!(unit.contains("TimeoutStopSec=135\n"), "{unit}");
    assert!(unit.contains("(120 s grace)"), "{unit}");
    // Port and bind stay in config.json, which the daemon reads at each start.
    assert!(
        !unit.contains("--port") && !unit.contains("--bind"),
        "{unit}"
    );
    let (_, plist, _) = run_with_home(t.path(), &["--data-dir", d, "install-launchd", "--print"]);
    assert!(
        plist.contains("<key>ExitTimeOut</key>\n\t<integer>135</integer>"),
        "{plist}"
    );
    // Flags win over config.json and go on the command line.
    let (_, unit, _) = run_with_home(
        t.path(),
        &[
            "--data-dir",
            d,
            "install-systemd",
            "--print",
            "--port",
            "9100",
            "--bind",
            "127.0.0.1",
            "--grace",
            "10",
        ],
    );
    assert!(
        unit.contains(&format!(
            "run --port 9100 --bind 127.0.0.1 --grace 10 --data-dir {d}\n"
        )) && unit.contains("TimeoutStopSec=25\n"),
        "{unit}"
    );
    // Installing says where the daemon will listen.
    let (code, out, err) = run_with_home(t.path(), &["--data-dir", d, "install-systemd"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("listen on 0.0.0.0:9001") && out.contains("120 s to drain"),
        "{out}"
    );
    // A broken config.json is reported, not ignored.
    std::fs::write(data.join("config.json"), r#"{"grace_seconds": "long"}"#).unwrap();
    let (code, _, err) = run_with_home(t.path(), &["--data-dir", d, "install-systemd", "--print"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("config.json") && err.contains("--grace"),
        "{err}"
    );
}

#[test]
fn install_man_puts_the_page_where_man_finds_it() {
    let t = tempdir();
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/man/bog-agents-daemon.1"
    ))
    .unwrap();
    // Default: share/man next to the binary's bin/, which man searches for each PATH entry.
    let prefix = t.path().join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let bin = prefix.join("bin/bog-agents-daemon");
    std::fs::copy(BIN, &bin).unwrap();
    let out = Command::new(&bin)
        .arg("install-man")
        .env("HOME", t.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = prefix.join("share/man/man1/bog-agents-daemon.1");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), source);
    if Command::new("man")
        .arg("-w")
        .arg("man")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let path = format!("{}:/usr/bin:/bin", prefix.join("bin").display());
        let found = Command::new("man")
            .args(["-w", "bog-agents-daemon"])
            .env("PATH", path)
            .env_remove("MANPATH")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&found.stdout).trim(),
            page.to_str().unwrap(),
            "{}",
            String::from_utf8_lossy(&found.stderr)
        );
    }
    // --dir, and uninstall-man.
    let dir = t.path().join("man");
    let (code, out, err) =
        run_with_home(t.path(), &["install-man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("man bog-agents-daemon"), "{out}");
    let page = dir.join("man1/bog-agents-daemon.1");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), source);
    let (code, _, _) = run_with_home(t.path(), &["uninstall-man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(!page.exists());
}
