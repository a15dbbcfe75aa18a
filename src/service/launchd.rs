//! launchd: a per-user agent, `~/Library/LaunchAgents/com.bogware.bog-agents-daemon.plist`,
//! started at login and restarted when it exits abnormally.

use std::path::{Path, PathBuf};

use super::{xml_escape, Options};

/// The job label.
pub const LABEL: &str = "com.bogware.bog-agents-daemon";

/// The property list text.
pub fn plist(o: &Options) -> String {
    let data = o.effective_data_dir();
    let mut args = format!(
        "\t\t<string>{}</string>\n",
        xml_escape(&o.binary.display().to_string())
    );
    for a in o.run_args() {
        args.push_str(&format!("\t\t<string>{}</string>\n", xml_escape(&a)));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{LABEL}</string>
	<key>ProgramArguments</key>
	<array>
{args}	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>5</integer>
	<key>ExitTimeOut</key>
	<integer>{stop}</integer>
	<key>StandardOutPath</key>
	<string>{out}</string>
	<key>StandardErrorPath</key>
	<string>{err}</string>
	<key>EnvironmentVariables</key>
	<dict>
		<key>PATH</key>
		<string>/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin</string>
	</dict>
</dict>
</plist>
"#,
        out = xml_escape(&data.join("daemon.out.log").display().to_string()),
        err = xml_escape(&data.join("daemon.err.log").display().to_string()),
        stop = o.stop_timeout(),
    )
}

/// Where the plist goes.
pub fn plist_path(home: &Path) -> PathBuf {
    home.join("Library/LaunchAgents")
        .join(format!("{LABEL}.plist"))
}
