//! A minimal ustar writer: enough to hand Docker a root filesystem or a build context made of a
//! few files, without a dependency.

/// One file of an archive: its path inside the archive, its mode and its bytes.
pub struct TarFile<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub contents: &'a [u8],
}

/// One entry of an archive: a file, a folder or a symbolic link.
pub enum TarEntry<'a> {
    File(TarFile<'a>),
    Dir { path: &'a str, mode: u32 },
    Symlink { path: &'a str, target: &'a str },
}

/// Builds an uncompressed tar archive of `entries`.
pub fn archive(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let (path, mode, size, kind, link) = match entry {
            TarEntry::File(file) => (file.path, file.mode, file.contents.len(), b'0', ""),
            TarEntry::Dir { path, mode } => (*path, *mode, 0, b'5', ""),
            TarEntry::Symlink { path, target } => (*path, 0o777, 0, b'2', *target),
        };
        let mut header = [0u8; 512];
        write_field(&mut header[0..100], path.as_bytes());
        write_octal(&mut header[100..108], u64::from(mode));
        write_octal(&mut header[108..116], 0);
        write_octal(&mut header[116..124], 0);
        write_octal(&mut header[124..136], size as u64);
        write_octal(&mut header[136..148], 0);
        header[156] = kind;
        write_field(&mut header[157..257], link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field read as spaces.
        header[148..156].fill(b' ');
        let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        write_octal(&mut header[148..155], u64::from(checksum));
        out.extend_from_slice(&header);
        if let TarEntry::File(file) = entry {
            out.extend_from_slice(file.contents);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn write_field(field: &mut [u8], value: &[u8]) {
    let length = value.len().min(field.len() - 1);
    field[..length].copy_from_slice(&value[..length]);
}

fn write_octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}", width = field.len() - 1);
    field[..text.len()].copy_from_slice(text.as_bytes());
    field[text.len()] = 0;
}
