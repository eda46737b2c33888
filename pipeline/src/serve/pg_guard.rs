//! Stands between a PostgreSQL client's socket and pgwire. First it settles encryption (`open`):
//! TLS when `[tls]` is set, which then is the only way in. Then every message the client sends is
//! framed and checked here before pgwire decodes it (pgwire reads counts and lengths without
//! checking them against the message, and holds messages of up to 1 GB), and a connection with
//! nothing sent either way for the idle timeout is closed. A malformed message gets an error
//! (SQLSTATE 08P01) and the connection is closed; pgwire never sees it.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::serve::tls::{self, Tls};

/// Messages other than Query and Parse (binds with their parameters, passwords) may be at most this long.
const MAX_OTHER_MESSAGE: usize = 16 << 20;
/// A startup packet is a few names and values.
const MAX_STARTUP_PACKET: usize = 10_000;
const SSL_REQUEST: i32 = 80_877_103;
const GSS_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// The first byte of a TLS handshake record: a client that starts TLS without asking first.
const TLS_HANDSHAKE: u8 = 0x16;

/// A client's connection once its encryption is settled.
pub(crate) struct Opened {
    pub stream: Either<TcpStream, TlsStream<TcpStream>>,
    /// The common name of the client certificate the handshake verified.
    pub certificate: Option<String>,
    /// The start of the startup packet, already read.
    pub read: BytesMut,
}

/// Settles encryption from the client's first packet. An SSLRequest is answered 'S' and the TLS
/// handshake follows (with `tls`; 'N' without), a TLS ClientHello starts TLS at once
/// (PostgreSQL 17's `sslnegotiation=direct`), a GSS request is answered 'N'. With `tls`, a
/// plain startup is refused, saying how to connect. `None`: the client went away or was refused.
pub(crate) async fn open(
    mut socket: TcpStream,
    tls: Option<&Tls>,
    timeout: Duration,
) -> std::io::Result<Option<Opened>> {
    let within = |what: &'static str| move |_| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
    loop {
        let mut first = [0u8; 1];
        if tokio::time::timeout(timeout, socket.peek(&mut first)).await.map_err(within("no startup packet"))?? == 0 {
            return Ok(None);
        }
        if first[0] == TLS_HANDSHAKE {
            return match tls {
                Some(tls) => handshake(socket, tls, timeout).await.map(Some),
                None => Ok(None),
            };
        }
        let mut head = [0u8; 8];
        tokio::time::timeout(timeout, socket.read_exact(&mut head)).await.map_err(within("no startup packet"))??;
        let asks = (i32::from_be_bytes(head[..4].try_into().expect("4 bytes")) == 8)
            .then(|| i32::from_be_bytes(head[4..].try_into().expect("4 bytes")));
        match (asks, tls) {
            (Some(SSL_REQUEST), Some(tls)) => {
                socket.write_all(b"S").await?;
                return handshake(socket, tls, timeout).await.map(Some);
            }
            (Some(SSL_REQUEST | GSS_REQUEST), _) => socket.write_all(b"N").await?,
            (_, Some(_)) => {
                let refusal = "this server accepts TLS connections only: connect with sslmode=require (or verify-full)";
                let _ = socket.write_all(&error_response("28000", refusal)).await;
                return Ok(None);
            }
            (_, None) => {
                return Ok(Some(Opened {
                    stream: Either::Left(socket),
                    certificate: None,
                    read: BytesMut::from(&head[..]),
                }))
            }
        }
    }
}

async fn handshake(socket: TcpStream, tls: &Tls, timeout: Duration) -> std::io::Result<Opened> {
    let stream = tokio::time::timeout(timeout, tls.acceptor().accept(socket))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake"))??;
    let certificate = tls::client_name(stream.get_ref().1);
    Ok(Opened { stream: Either::Right(stream), certificate, read: BytesMut::new() })
}

pub(crate) struct Guard {
    pub max_query_bytes: usize,
    pub idle_timeout: Duration,
}

/// Why a connection was closed by the guard.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Violation {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    TooLarge(String),
}

impl Guard {
    /// Moves bytes between the client and pgwire until either side closes, checking each client
    /// message first; `inbound` holds what `open` read already.
    pub(crate) async fn pump(
        self,
        client: impl AsyncRead + AsyncWrite,
        mut inbound: BytesMut,
        server: UnixStream,
    ) -> std::io::Result<()> {
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let (mut server_rd, mut server_wr) = server.into_split();
        inbound.reserve(8192);
        let mut outbound = vec![0u8; 64 * 1024];
        let mut started = false;
        let mut last = Instant::now();
        loop {
            tokio::select! {
                read = client_rd.read_buf(&mut inbound) => {
                    if read? == 0 {
                        return Ok(());
                    }
                    last = Instant::now();
                    loop {
                        match self.next_message(&mut inbound, &mut started) {
                            Ok(Some(Frame::Forward(message))) => self.within(server_wr.write_all(&message)).await?,
                            Ok(Some(Frame::Refuse(answer))) => self.within(client_wr.write_all(answer)).await?,
                            Ok(Some(Frame::Close)) => return Ok(()),
                            Ok(None) => break,
                            Err(violation) => {
                                let code = match violation { Violation::Malformed(_) => "08P01", Violation::TooLarge(_) => "54000" };
                                tracing::debug!(%violation, "postgres: connection closed");
                                let _ = self.within(client_wr.write_all(&error_response(code, &violation.to_string()))).await;
                                return Ok(());
                            }
                        }
                    }
                }
                read = server_rd.read(&mut outbound) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(());
                    }
                    last = Instant::now();
                    self.within(client_wr.write_all(&outbound[..n])).await?;
                }
                () = tokio::time::sleep_until(last + self.idle_timeout) => {
                    tracing::debug!("postgres: idle connection closed");
                    return Ok(());
                }
            }
        }
    }

    /// A write that makes no progress for the idle timeout (a client that stopped reading) ends the connection.
    async fn within(&self, write: impl std::future::Future<Output = std::io::Result<()>>) -> std::io::Result<()> {
        tokio::time::timeout(self.idle_timeout, write)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client stopped reading")))
    }

    /// The next whole message in `buf`, checked; `None` until one has arrived.
    fn next_message(&self, buf: &mut BytesMut, started: &mut bool) -> Result<Option<Frame>, Violation> {
        if !*started {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
            if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
                return Err(Violation::Malformed(format!("a startup packet of {len} bytes")));
            }
            if buf.len() < len as usize {
                return Ok(None);
            }
            let packet = buf.split_to(len as usize);
            let code = i32::from_be_bytes(packet[4..8].try_into().expect("4 bytes"));
            return Ok(Some(match code {
                SSL_REQUEST | GSS_REQUEST => Frame::Refuse(b"N"),
                CANCEL_REQUEST => Frame::Close,
                _ => {
                    *started = true;
                    Frame::Forward(packet)
                }
            }));
        }
        if buf.len() < 5 {
            return Ok(None);
        }
        let kind = buf[0];
        let len = i32::from_be_bytes(buf[1..5].try_into().expect("4 bytes"));
        let limit = match kind {
            b'Q' | b'P' => self.max_query_bytes + 4096,
            _ => MAX_OTHER_MESSAGE,
        };
        if len < 4 {
            return Err(Violation::Malformed(format!("message '{}' has length {len}", kind as char)));
        }
        if len as usize > limit {
            return Err(Violation::TooLarge(format!(
                "a message of {len} bytes: queries may be at most {} bytes ([sql] max_query_bytes), other messages {} MiB",
                self.max_query_bytes,
                MAX_OTHER_MESSAGE >> 20
            )));
        }
        if buf.len() < 1 + len as usize {
            buf.reserve(1 + len as usize - buf.len());
            return Ok(None);
        }
        let mut message = buf.split_to(1 + len as usize);
        check_body(kind, &mut message[5..])
            .map_err(|what| Violation::Malformed(format!("malformed '{}' message: {what}", kind as char)))?;
        Ok(Some(Frame::Forward(message)))
    }
}

enum Frame {
    /// A checked message for pgwire.
    Forward(BytesMut),
    /// A request answered here, not forwarded.
    Refuse(&'static [u8]),
    /// A request that ends the connection (cancel requests are not served).
    Close,
}

/// Checks that a message's body is exactly what its type says, field by field. A negative
/// Execute row limit is rewritten to 0 ("all", as PostgreSQL reads it).
fn check_body(kind: u8, body: &mut [u8]) -> Result<(), &'static str> {
    let mut reader = Reader(&body[..]);
    match kind {
        b'Q' => reader.cstring()?,
        b'P' => {
            reader.cstring()?;
            reader.cstring()?;
            let types = reader.count()?;
            reader.skip(types * 4)?;
        }
        b'B' => {
            reader.cstring()?;
            reader.cstring()?;
            let formats = reader.count()?;
            reader.skip(formats * 2)?;
            for _ in 0..reader.count()? {
                let len = reader.i32()?;
                if len < -1 {
                    return Err("a parameter length below -1");
                }
                reader.skip(len.max(0) as usize)?;
            }
            let results = reader.count()?;
            reader.skip(results * 2)?;
        }
        b'E' => {
            reader.cstring()?;
            let at = body.len() - reader.0.len();
            if reader.i32()? < 0 {
                body[at..at + 4].copy_from_slice(&0i32.to_be_bytes());
            }
            reader = Reader(&[]);
        }
        b'D' | b'C' => {
            if !matches!(reader.u8()?, b'S' | b'P') {
                return Err("the target is neither S nor P");
            }
            reader.cstring()?;
        }
        b'S' | b'H' | b'X' => {}
        // Passwords and SASL answers; COPY data is refused by pgwire itself (nothing copies in).
        b'p' | b'd' | b'c' | b'f' => reader = Reader(&[]),
        _ => return Err("unknown message type"),
    }
    match reader.0.is_empty() {
        true => Ok(()),
        false => Err("bytes after the last field"),
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn cstring(&mut self) -> Result<(), &'static str> {
        let end = self.0.iter().position(|b| *b == 0).ok_or("a string without its terminating zero")?;
        self.0 = &self.0[end + 1..];
        Ok(())
    }

    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        if self.0.len() < n {
            return Err("shorter than its counts and lengths say");
        }
        self.0 = &self.0[n..];
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        let b = *self.0.first().ok_or("ends early")?;
        self.0 = &self.0[1..];
        Ok(b)
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        if self.0.len() < 4 {
            return Err("ends early");
        }
        Ok(self.0.get_i32())
    }

    /// A 16-bit count, which may not be negative.
    fn count(&mut self) -> Result<usize, &'static str> {
        if self.0.len() < 2 {
            return Err("ends early");
        }
        usize::try_from(self.0.get_i16()).map_err(|_| "a negative count")
    }
}

/// An ErrorResponse message, built here because pgwire never sees the offending message.
fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = BytesMut::new();
    for (tag, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', message)] {
        fields.put_u8(tag);
        fields.put_slice(value.as_bytes());
        fields.put_u8(0);
    }
    fields.put_u8(0);
    let mut out = Vec::with_capacity(fields.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> BytesMut {
        let mut m = BytesMut::new();
        m.put_u8(kind);
        m.put_i32(body.len() as i32 + 4);
        m.put_slice(body);
        m
    }

    fn guard() -> Guard {
        Guard { max_query_bytes: 1000, idle_timeout: Duration::from_secs(1) }
    }

    fn checked(mut buf: BytesMut) -> Result<Option<Frame>, Violation> {
        guard().next_message(&mut buf, &mut true)
    }

    #[test]
    fn well_formed_messages_pass_and_malformed_ones_are_named() {
        assert!(matches!(checked(message(b'Q', b"SELECT 1\0")), Ok(Some(Frame::Forward(_)))));
        // Bind: portal "", statement "", 0 formats, 1 parameter of 1 byte, 0 result formats.
        let bind = [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0];
        assert!(matches!(checked(message(b'B', &bind)), Ok(Some(Frame::Forward(_)))));
        // 32767 parameters announced, none sent; and a count of -1.
        for bad in [&[0u8, 0, 0, 0, 0x7f, 0xff, 0, 0][..], &[0, 0, 0, 0, 0xff, 0xff, 0, 0]] {
            let err = checked(message(b'B', bad)).err().expect("refused").to_string();
            assert!(err.contains("'B'"), "{err}");
        }
        assert!(checked(message(b'Q', b"no terminator")).is_err());
        assert!(checked(message(b'Z', b"")).is_err(), "a backend-only type from a client");
        let err = checked(message(b'Q', &[b'x'; 6000])).err().expect("too large").to_string();
        assert!(err.contains("max_query_bytes"), "{err}");
    }

    #[test]
    fn a_negative_row_limit_becomes_all() {
        let Ok(Some(Frame::Forward(m))) = checked(message(b'E', &[0, 0xff, 0xff, 0xff, 0xff])) else { panic!() };
        assert_eq!(&m[6..], &[0, 0, 0, 0]);
    }

    #[test]
    fn a_message_is_forwarded_only_once_whole() {
        let whole = message(b'Q', b"SELECT 1\0");
        let mut buf = BytesMut::from(&whole[..7]);
        assert!(guard().next_message(&mut buf, &mut true).unwrap().is_none());
        buf.extend_from_slice(&whole[7..]);
        assert!(matches!(guard().next_message(&mut buf, &mut true), Ok(Some(Frame::Forward(_)))));
        let mut ssl = BytesMut::from(&[0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..]);
        let mut started = false;
        assert!(matches!(guard().next_message(&mut ssl, &mut started), Ok(Some(Frame::Refuse(b"N")))));
        assert!(!started);
    }
}
