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
    let args: Vec<String> = o
        .run_args()
        .into_iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a
            }
        })
        .collect();
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

/// UTF-16LE with a byte-order mark and CRLF line ends.
fn utf16(text: &str) -> Vec<u8> {
    let text = text.replace('\n', "\r\n");
    let mut v = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        v.extend_from_slice(&u.to_le_bytes());
    }
    v
}
