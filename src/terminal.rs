//! The user's terminal during `berth exec -t`: raw while the command runs (keys go to it as
//! typed, not line by line, and Ctrl-C reaches it rather than stopping berth), and its size.

use std::os::fd::{AsRawFd, BorrowedFd};

/// The terminal in raw mode until this is dropped, when it is put back as it was.
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    pub fn enter(terminal: BorrowedFd<'_>) -> std::io::Result<RawMode> {
        let fd = terminal.as_raw_fd();
        // SAFETY: `termios` is plain data that `tcgetattr` fills; `fd` is open for the borrow.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the pointer is to a live, writable `termios`.
        if unsafe { libc::tcgetattr(fd, &raw mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: `cfmakeraw` only changes the flags of the `termios` it is given.
        unsafe { libc::cfmakeraw(&raw mut raw) };
        // SAFETY: `fd` is open; `raw` is a valid `termios` made from the terminal's own.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw const raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `saved` is what `tcgetattr` read from this terminal; a closed `fd` fails
        // harmlessly with EBADF.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &raw const self.saved) };
    }
}

/// The terminal's columns and rows; `None` when it is not a terminal or does not say.
pub fn size(terminal: BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: `winsize` is plain data that TIOCGWINSZ fills; the fd is open for the borrow.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is live and writable.
    let result = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCGWINSZ, &raw mut size) };
    (result == 0 && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}
