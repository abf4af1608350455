//! git:// (`git daemon`) for libgit2: one TCP connection per fetch with `TCP_NODELAY`, its
//! reads and writes bounded by the fetch's deadline.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};

use super::Reach;

pub(super) struct Daemon {
    reach: Reach,
}

impl Daemon {
    pub fn new(reach: Reach) -> Daemon {
        Daemon { reach }
    }
}

impl SmartSubtransport for Daemon {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        if action != Service::UploadPackLs {
            return Err(git2::Error::from_str("dockhand only fetches"));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| self.reach.fail_git(format!("bad origin URL {url:?}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| {
                self.reach
                    .fail_git(format!("origin URL {url:?} has no host"))
            })?
            .to_string();
        let port = parsed.port().unwrap_or(9418);
        let path = parsed.path();
        let io = |e: io::Error| self.reach.fail_git(format!("cannot reach {url}: {e}"));
        let left = self.reach.remaining().map_err(io)?;
        let addr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| {
                self.reach
                    .fail_git(format!("{host} resolves to no address"))
            })?;
        let socket = TcpStream::connect_timeout(&addr, left).map_err(io)?;
        socket.set_nodelay(true).map_err(io)?;
        let mut stream = Stream {
            reach: self.reach.clone(),
            socket,
        };
        // The request: one pkt-line naming the service, the path and the virtual host.
        let host_arg = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let line = format!("git-upload-pack {path}\0host={host_arg}\0");
        let pkt = format!("{:04x}{line}", line.len() + 4);
        stream.write_all(pkt.as_bytes()).map_err(io)?;
        Ok(Box::new(stream))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

struct Stream {
    reach: Reach,
    socket: TcpStream,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket
            .set_read_timeout(Some(self.reach.remaining()?))?;
        self.socket.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.reach.timeout_error(),
            _ => e,
        })
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.socket
            .set_write_timeout(Some(self.reach.remaining()?))?;
        self.socket.write(data).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.reach.timeout_error(),
            _ => e,
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}
