//! The answer of `/readyz`, on the server and on agents: a line per check, `[+]name ok: ...`
//! or `[-]name failed: ...`, as Kubernetes' `/readyz?verbose` writes it, then `ready` or
//! `not ready`. Pure; the HTTP status (200 or 503) follows the first value.

/// Whether every check passed, and the text to answer.
pub fn answer(checks: &[(&str, Result<String, String>)]) -> (bool, String) {
    let mut text = String::new();
    for (name, result) in checks {
        let line = match result {
            Ok(detail) => format!("[+]{name} ok: {detail}\n"),
            Err(detail) => format!("[-]{name} failed: {detail}\n"),
        };
        text.push_str(&line);
    }
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    text.push_str(if ready { "ready\n" } else { "not ready\n" });
    (ready, text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_failed_check_makes_it_not_ready() {
        let (ready, text) = super::answer(&[("store", Ok("answers".into())), ("head", Err("not read".into()))]);
        assert!(!ready);
        assert_eq!(text, "[+]store ok: answers\n[-]head failed: not read\nnot ready\n");
        assert_eq!(super::answer(&[("store", Ok("answers".into()))]), (true, "[+]store ok: answers\nready\n".into()));
    }
}
