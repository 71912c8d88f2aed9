//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, QUIT. They touch only the
//! connection's [`Session`] and the node's client list.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ringkv_proto::ReplySink;

use super::{eq, int, CmdError, CmdResult, Command};
use crate::node::{ClientInfo, Node};
use crate::util::lock;

/// Per-connection state, owned by the connection's loop.
pub struct Session {
    pub id: u64,
    pub info: Arc<ClientInfo>,
    pub authenticated: bool,
    /// Set by QUIT (and fatal errors): close once the pending replies are written.
    pub close: bool,
    /// CLUSTER QUORUM: this connection's read and write quorums (0: the node's --r / --w).
    pub quorum: (u8, u8),
}

impl Session {
    pub fn new(node: &Node, info: Arc<ClientInfo>) -> Session {
        Session {
            id: node.register(info.clone()),
            authenticated: node.config.password.is_none(),
            info,
            close: false,
            quorum: (0, 0),
        }
    }

    /// Checks a password in constant time (for equal lengths).
    pub fn try_auth(&mut self, node: &Node, password: &[u8]) -> CmdResult<()> {
        match &node.config.password {
            None => Err(CmdError::msg(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            )),
            Some(p) if constant_time_eq::constant_time_eq(p.as_bytes(), password) => {
                self.authenticated = true;
                Ok(())
            }
            Some(_) => Err(CmdError::msg(
                "WRONGPASS invalid username-password pair or user is disabled.",
            )),
        }
    }

    pub fn set_name(&self, name: &[u8]) -> CmdResult<()> {
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Err(CmdError::msg(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        *lock(&self.info.name) = String::from_utf8_lossy(name).into_owned();
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    pub protover: Option<i64>,
    pub auth: Option<(&'a [u8], &'a [u8])>,
    pub setname: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCmd<'a> {
    SetName(&'a [u8]),
    GetName,
    Id,
    List,
    Info,
    /// CLIENT SETINFO, which client libraries send on connect: accepted and ignored.
    SetInfo,
}

pub fn parse<'a>(name: &'static str, a: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    Ok(match name {
        "ping" => match a {
            [] => Command::Ping(None),
            [m] => Command::Ping(Some(m)),
            _ => return Err(CmdError::arity("ping")),
        },
        "echo" => Command::Echo(a[0]),
        "quit" => Command::Quit,
        "wait" => {
            let n = int(a[0])?;
            let timeout = int(a[1])?;
            if timeout < 0 {
                return Err(CmdError::msg("ERR timeout is negative"));
            }
            Command::Wait(n, timeout)
        }
        // As Redis's getIntFromObjectOrReply: an integer, then within a C int.
        "select" => Command::Select(
            Some(int(a[0])?)
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or(CmdError::msg(
                    "ERR value is out of range, value must between -2147483648 and 2147483647",
                ))?,
        ),
        "auth" => match a {
            [p] => Command::Auth(p, false),
            [user, p] if eq(user, "default") => Command::Auth(p, true),
            [_, _] => {
                return Err(CmdError::msg(
                    "WRONGPASS invalid username-password pair or user is disabled.",
                ))
            }
            _ => return Err(CmdError::SYNTAX),
        },
        "hello" => {
            let mut h = Hello {
                protover: None,
                auth: None,
                setname: None,
            };
            if let Some(v) = a.first() {
                let ver = int(v).map_err(|_| {
                    CmdError::msg("ERR Protocol version is not an integer or out of range")
                })?;
                // Checked before the options, as Redis does.
                if !(2..=3).contains(&ver) {
                    return Err(CmdError::msg("NOPROTO unsupported protocol version"));
                }
                h.protover = Some(ver);
            }
            let mut i = 1;
            while i < a.len() {
                if eq(a[i], "AUTH") && i + 2 < a.len() {
                    h.auth = Some((a[i + 1], a[i + 2]));
                    i += 3;
                } else if eq(a[i], "SETNAME") && i + 1 < a.len() {
                    h.setname = Some(a[i + 1]);
                    i += 2;
                } else {
                    return Err(CmdError::msg(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(a[i])
                    )));
                }
            }
            Command::Hello(h)
        }
        "client" => {
            let sub = a[0];
            let c = if eq(sub, "SETNAME") && a.len() == 2 {
                ClientCmd::SetName(a[1])
            } else if eq(sub, "GETNAME") && a.len() == 1 {
                ClientCmd::GetName
            } else if eq(sub, "ID") && a.len() == 1 {
                ClientCmd::Id
            } else if eq(sub, "LIST") {
                ClientCmd::List
            } else if eq(sub, "INFO") && a.len() == 1 {
                ClientCmd::Info
            } else if eq(sub, "SETINFO") && a.len() == 3 {
                ClientCmd::SetInfo
            } else if ["SETNAME", "GETNAME", "ID", "INFO", "SETINFO"]
                .iter()
                .any(|s| eq(sub, s))
            {
                return Err(CmdError::arity(&format!(
                    "client|{}",
                    String::from_utf8_lossy(sub).to_lowercase()
                )));
            } else {
                return Err(CmdError::msg(format!(
                    "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                    String::from_utf8_lossy(sub)
                )));
            };
            Command::Client(c)
        }
        _ => return Err(CmdError::unknown(a)),
    })
}

fn client_line(id: u64, c: &ClientInfo) -> String {
    let now = crate::util::now_ms();
    format!(
        "id={id} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 \
         multi=-1 qbuf=0 obl=0 oll=0 omem=0 events=r cmd=NULL user=default resp=2 lib={}",
        c.addr,
        c.laddr,
        lock(&c.name),
        c.created.elapsed().as_secs(),
        now.saturating_sub(c.last_active_ms.load(Relaxed)) / 1000,
        if c.binary.load(Relaxed) {
            "ringkv-binary"
        } else {
            "resp"
        },
    )
}

pub fn exec(cmd: &Command<'_>, s: &mut Session, node: &Node, out: &mut dyn ReplySink) {
    if let Err(e) = try_exec(cmd, s, node, out) {
        out.error(&e.0);
    }
}

fn try_exec(
    cmd: &Command<'_>,
    s: &mut Session,
    node: &Node,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    match *cmd {
        Command::Ping(None) => out.simple("PONG"),
        Command::Ping(Some(m)) | Command::Echo(m) => out.bulk(m),
        Command::Quit => {
            s.close = true;
            out.simple("OK");
        }
        // A single node has no replicas: nothing to wait for (a cluster node runs WAIT in the
        // connection, net::connection).
        Command::Wait(..) => out.int(0),
        Command::Select(0) => out.simple("OK"),
        Command::Select(_) => return Err(CmdError::msg("ERR DB index is out of range")),
        // `AUTH default <any>` without a configured password succeeds, as Redis's "nopass"
        // default user does; the one-argument form is an error then.
        Command::Auth(_, true) if node.config.password.is_none() => out.simple("OK"),
        Command::Auth(p, _) => {
            s.try_auth(node, p)?;
            out.simple("OK");
        }
        Command::Hello(ref h) => {
            if let Some(v) = h.protover {
                if v != 2 {
                    // RESP3 is not implemented: answer as Redis does for unknown versions.
                    return Err(CmdError::msg("NOPROTO unsupported protocol version"));
                }
            }
            if let Some((user, pass)) = h.auth {
                if !eq(user, "default") {
                    return Err(CmdError::msg(
                        "WRONGPASS invalid username-password pair or user is disabled.",
                    ));
                }
                // Without a password the default user is "nopass" in Redis: any password
                // authenticates it.
                if node.config.password.is_some() {
                    s.try_auth(node, pass)?;
                }
            }
            if !s.authenticated {
                return Err(CmdError::msg(
                    "NOAUTH HELLO must be called with the client already authenticated, \
                     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                     authenticate the client and select the RESP protocol version at the same \
                     time",
                ));
            }
            if let Some(n) = h.setname {
                s.set_name(n)?;
            }
            out.array(14);
            out.bulk(b"server");
            out.bulk(b"ringkv");
            out.bulk(b"version");
            out.bulk(env!("CARGO_PKG_VERSION").as_bytes());
            out.bulk(b"proto");
            out.int(2);
            out.bulk(b"id");
            out.int(s.id as i64);
            out.bulk(b"mode");
            out.bulk(b"standalone");
            out.bulk(b"role");
            out.bulk(b"master");
            out.bulk(b"modules");
            out.array(0);
        }
        Command::Client(ref c) => match *c {
            ClientCmd::SetName(n) => {
                s.set_name(n)?;
                out.simple("OK");
            }
            ClientCmd::GetName => {
                let name = lock(&s.info.name).clone();
                if name.is_empty() {
                    out.nil();
                } else {
                    out.bulk(name.as_bytes());
                }
            }
            ClientCmd::Id => out.int(s.id as i64),
            ClientCmd::List => {
                let mut text = String::new();
                for (id, c) in node.clients() {
                    text.push_str(&client_line(id, &c));
                    text.push('\n');
                }
                out.bulk(text.as_bytes());
            }
            ClientCmd::Info => {
                let mut line = client_line(s.id, &s.info);
                line.push('\n');
                out.bulk(line.as_bytes());
            }
            ClientCmd::SetInfo => out.simple("OK"),
        },
        string_commands!() | key_commands!() | keyspace_commands!() | server_commands!() => {
            return Err(CmdError::msg("ERR internal: not a connection command"))
        }
    }
    Ok(())
}
