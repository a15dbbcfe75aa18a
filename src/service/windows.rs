//! Windows Task Scheduler: a task that starts the daemon at logon, restarts it on failure
//! and has no execution time limit. The file given to `schtasks /Create /XML` is UTF-16LE
//! with a byte-order mark and declares `encoding="UTF-16"` ([`task_file`]); the text that
//! `--print` shows is UTF-8 and declares that ([`task_xml`]), so either parses as it is.

use super::{xml_escape, Options};

/// The task name.
pub const TASK: &str = "bog-agents-daemon";

/// The task XML as UTF-8 text, declared as such (what `--print` shows).
pub fn task_xml(o: &Options) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        task_body(o)
    )
}

/// The bytes of the task file for `schtasks`: UTF-16LE with a byte-order mark, CRLF line
/// ends, declared `encoding="UTF-16"`.
pub fn task_file(o: &Options) -> Vec<u8> {
    utf16(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n{}",
        task_body(o)
    ))
}

/// The task element, without the XML declaration.
fn task_body(o: &Options) -> String {
    let args: Vec<String> = o.run_args().iter().map(|a| quote_arg(a)).collect();
    format!(
        r#"<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>bog-agents-daemon: runs AI agents on schedules, file changes, webhooks and git pushes</Description>
    <URI>\{TASK}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{cmd}</Command>
      <Arguments>{args}</Arguments>
    </Exec>
  </Actions>
</Task>
"#,
        cmd = xml_escape(&o.binary.display().to_string()),
        args = xml_escape(&args.join(" ")),
    )
}

/// One argument of a Windows command line, quoted so that the C runtime's splitting (and
/// Rust's, which the daemon uses: CommandLineToArgvW's rules) gives it back as it is: bare
/// when it has no space, tab, newline or quote and is not empty; else in quotes, with each
/// run of backslashes before a quote doubled and that quote escaped, and the backslashes
/// before the closing quote doubled (`C:\My Data\` becomes `"C:\My Data\\"`, not a
/// quote that `\"` would escape).
pub fn quote_arg(a: &str) -> String {
    if !a.is_empty() && !a.contains([' ', '\t', '\n', '\x0b', '"']) {
        return a.to_string();
    }
    let mut q = String::with_capacity(a.len() + 2);
    q.push('"');
    let mut backslashes = 0;
    for c in a.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                // The run already written, again, and one to escape the quote.
                q.extend(std::iter::repeat_n('\\', backslashes + 1));
                backslashes = 0;
            }
            _ => backslashes = 0,
        }
        q.push(c);
    }
    q.extend(std::iter::repeat_n('\\', backslashes));
    q.push('"');
    q
}

/// UTF-16LE with a byte-order mark and CRLF line ends.
fn utf16(text: &str) -> Vec<u8> {
    let text = text.replace('\n', "\r\n");
    let mut v = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        v.extend_from_slice(&u.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C runtime's splitting of a command line's arguments (CommandLineToArgvW's rules
    /// after the program name), to check [`quote_arg`] against.
    fn split(line: &str) -> Vec<String> {
        let (mut args, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                let n = chars[i..].iter().take_while(|c| **c == '\\').count();
                if chars.get(i + n) == Some(&'"') {
                    cur.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        cur.push('"');
                        i += n + 1;
                    } else {
                        i += n;
                    }
                } else {
                    cur.extend(std::iter::repeat_n('\\', n));
                    i += n;
                }
                any = true;
                continue;
            }
            match c {
                '"' => {
                    quoted = !quoted;
                    any = true;
                }
                ' ' | '\t' if !quoted => {
                    if any {
                        args.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                _ => {
                    cur.push(c);
                    any = true;
                }
            }
            i += 1;
        }
        if any {
            args.push(cur);
        }
        args
    }

    #[test]
    fn arguments_are_quoted_as_windows_splits_them() {
        assert_eq!(quote_arg("run"), "run");
        assert_eq!(quote_arg(r"C:\Data\"), r"C:\Data\");
        assert_eq!(quote_arg(r"C:\My Data\"), r#""C:\My Data\\""#);
        assert_eq!(quote_arg(r"C:\My Data"), r#""C:\My Data""#);
        assert_eq!(quote_arg(""), r#""""#);
        assert_eq!(quote_arg(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote_arg(r#"a\"b c"#), r#""a\\\"b c""#);
        for a in [
            r"C:\My Data\",
            r"C:\My Data\\",
            r#"x\"y z"#,
            r#"" quoted ""#,
            "",
            r"\\server\share\dir with space\",
            "tab\there",
        ] {
            let line = format!("{} next", quote_arg(a));
            assert_eq!(
                split(&line),
                vec![a.to_string(), "next".to_string()],
                "{line}"
            );
        }
    }

    #[test]
    fn the_data_dir_with_a_trailing_backslash_stays_one_argument() {
        let o = Options {
            binary: r"C:\Program Files\bog\bog-agents-daemon.exe".into(),
            port: Some(7878),
            bind: None,
            grace: None,
            grace_seconds: 30,
            data_dir: Some(r"C:\My Data\".into()),
            home: r"C:\Users\me".into(),
        };
        let xml = task_xml(&o);
        assert!(
            xml.contains(
                r#"<Arguments>run --port 7878 --data-dir &quot;C:\My Data\\&quot;</Arguments>"#
            ),
            "{xml}"
        );
        assert_eq!(
            split(r#"run --port 7878 --data-dir "C:\My Data\\""#),
            ["run", "--port", "7878", "--data-dir", r"C:\My Data\"]
        );
    }
}
