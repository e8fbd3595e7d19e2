//! Sessions: a port-forward from the CLI to a pod, carried over connections that are each
//! opened outward (nodes only dial out). The CLI upgrades its request to the server; the server
//! asks the pod's node, over the node's long-polled request channel, to dial back an upgraded
//! connection for the session; then the server splices the two. The node answers first with
//! one line: `ok` and the bytes of the pod's port follow, or `error: why` and the connection
//! ends.

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
}
