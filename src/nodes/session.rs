//! Sessions: a port-forward or an attached exec from the CLI to a pod, carried over connections that are each
//! opened outward (nodes only dial out). The CLI upgrades its request to the server; the server
//! asks the pod's node, over the node's long-polled request channel, to dial back an upgraded
//! connection for the session; then the server splices the two. The node answers first with
//! one line: `ok` and the bytes of the pod's port follow, or `error: why` and the connection
//! ends. An exec session's bytes after `ok` are [`frame`]s, both ways.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `Upgrade` header's protocol name on every leg of a session.
pub const PROTOCOL: &str = "berth-session";

/// The longest answer line read before giving up on it.
const LINE_LIMIT: usize = 4096;

/// Writes the node's answer: the session is open, or why it is not.
pub async fn answer<W: AsyncWrite + Unpin>(writer: &mut W, result: &Result<(), String>) -> std::io::Result<()> {
    let line = match result {
        Ok(()) => "ok\n".to_owned(),
        Err(why) => format!("error: {}\n", why.replace('\n', " ")),
    };
    writer.write_all(line.as_bytes()).await?;
    writer.flush().await
}

/// Reads the node's answer line from the start of a session; `Ok` when the bytes that follow
/// are the pod's. The reader keeps whatever came after the line.
pub async fn read_answer<R: AsyncRead + Unpin>(reader: &mut tokio::io::BufReader<R>) -> Result<(), String> {
    let mut line = Vec::new();
    let mut limited = (&mut *reader).take(LINE_LIMIT as u64);
    tokio::io::AsyncBufReadExt::read_until(&mut limited, b'\n', &mut line)
        .await
        .map_err(|e| format!("the session broke before the node answered: {e}"))?;
    let line = String::from_utf8_lossy(&line);
    let line = line.trim_end();
    match line.strip_prefix("error: ") {
        _ if line == "ok" => Ok(()),
        Some(why) => Err(why.to_owned()),
        None if line.is_empty() => Err("the node closed the session without an answer".to_owned()),
        None => Err(format!("the node answered `{line}`, not a session")),
    }
}

/// The frames of an exec session: a kind byte, the payload's length (4 bytes, big-endian),
/// the payload. The CLI sends `STDIN`, `STDIN_END` and `RESIZE`; the node sends `STDOUT`,
/// `STDERR` and, last, `EXIT`.
pub mod frame {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// The command ended: its exit code in decimal.
    pub const EXIT: u8 = 3;
    /// The terminal's new size: columns and rows, 2 bytes each, big-endian.
    pub const RESIZE: u8 = 4;
    /// The user's input ended: the command reads end-of-file.
    pub const STDIN_END: u8 = 5;
    /// The largest payload a frame may carry.
    pub const LIMIT: usize = 1 << 20;
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    for part in payload.chunks(frame::LIMIT).chain(payload.is_empty().then_some(&[][..])) {
        let length = u32::try_from(part.len()).expect("a frame is at most 1 MiB");
        let mut header = [kind, 0, 0, 0, 0];
        header[1..].copy_from_slice(&length.to_be_bytes());
        writer.write_all(&header).await?;
        writer.write_all(part).await?;
    }
    writer.flush().await
}

/// Reads one frame; `None` when the connection ended between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    reader.read_exact(&mut header[1..]).await?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length > frame::LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a session frame of {length} bytes; at most {} are allowed", frame::LIMIT),
        ));
    }
    let mut payload = vec![0; length];
    reader.read_exact(&mut payload).await?;
    Ok(Some((header[0], payload)))
}

/// A `RESIZE` frame's payload.
pub fn size_payload(columns: u16, rows: u16) -> [u8; 4] {
    let [c1, c2] = columns.to_be_bytes();
    let [r1, r2] = rows.to_be_bytes();
    [c1, c2, r1, r2]
}

/// Columns and rows from a `RESIZE` frame's payload.
pub fn parse_size(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [c1, c2, r1, r2] => Some((u16::from_be_bytes([*c1, *c2]), u16::from_be_bytes([*r1, *r2]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reads_back_and_leaves_what_follows() {
        let (mut node, cli) = tokio::io::duplex(64);
        answer(&mut node, &Ok(())).await.unwrap();
        node.write_all(b"HTTP/1.1 200 OK").await.unwrap();
        drop(node);
        let mut reader = tokio::io::BufReader::new(cli);
        assert_eq!(read_answer(&mut reader).await, Ok(()));
        let mut rest = String::new();
        reader.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "HTTP/1.1 200 OK");

        let (mut node, cli) = tokio::io::duplex(256);
        answer(&mut node, &Err("pod shop/web-0 has no port 81\nsecond".into())).await.unwrap();
        drop(node);
        let why = read_answer(&mut tokio::io::BufReader::new(cli)).await.unwrap_err();
        assert_eq!(why, "pod shop/web-0 has no port 81 second");

        let (node, cli) = tokio::io::duplex(16);
        drop(node);
        assert!(read_answer(&mut tokio::io::BufReader::new(cli)).await.unwrap_err().contains("without an answer"));
    }

    #[tokio::test]
    async fn frames_read_back_in_order_and_big_ones_are_refused() {
        let (mut one, mut other) = tokio::io::duplex(1 << 16);
        write_frame(&mut one, frame::STDOUT, b"hello").await.unwrap();
        write_frame(&mut one, frame::RESIZE, &size_payload(132, 43)).await.unwrap();
        write_frame(&mut one, frame::STDIN_END, b"").await.unwrap();
        drop(one);
        assert_eq!(read_frame(&mut other).await.unwrap(), Some((frame::STDOUT, b"hello".to_vec())));
        let (kind, size) = read_frame(&mut other).await.unwrap().unwrap();
        assert_eq!((kind, parse_size(&size)), (frame::RESIZE, Some((132, 43))));
        assert_eq!(read_frame(&mut other).await.unwrap(), Some((frame::STDIN_END, Vec::new())));
        assert_eq!(read_frame(&mut other).await.unwrap(), None);

        let (mut one, mut other) = tokio::io::duplex(64);
        one.write_all(&[frame::STDIN, 0xff, 0, 0, 0]).await.unwrap();
        assert!(read_frame(&mut other).await.unwrap_err().to_string().contains("at most"));
    }
}
