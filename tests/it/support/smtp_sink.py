"""SMTP sink for tests/outputs.rs: aiosmtpd on 127.0.0.1, port 0; writes the port to
argv[2] once listening and appends one JSON line per message to argv[1]: envelope,
headers, decoded body, and the AUTH login and password it was given (it accepts any)."""
import asyncio, json, os, sys
from email import message_from_bytes
from email.policy import default as default_policy
from aiosmtpd.smtp import SMTP, AuthResult

out_path, port_path = sys.argv[1], sys.argv[2]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = message_from_bytes(raw, policy=default_policy)
        auth = session.auth_data
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {k: str(v) for k, v in msg.items()},
            "body": msg.get_content(),
            "auth": [auth.login.decode(), auth.password.decode()] if auth else None,
        }
        with open(out_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True, auth_data=auth_data)

async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: SMTP(Handler(), hostname="sink.test", authenticator=authenticator,
                     auth_require_tls=False),
        host="127.0.0.1", port=0)
    port = srv.sockets[0].getsockname()[1]
    with open(port_path + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_path + ".tmp", port_path)
    await srv.serve_forever()

asyncio.run(main())
