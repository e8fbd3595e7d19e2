//! The pod sandbox image: a container that only holds a pod's network namespace and published
//! ports, like Kubernetes' pause container. The agent imports it from bytes it carries, so
//! running a pod never needs a container registry.

use super::tar::{TarEntry, TarFile, archive};

/// A complete static x86-64 Linux program, 129 bytes: one ELF header, one loadable segment, and
/// the code `loop: mov eax, 34 (pause); syscall; jmp loop`. It sleeps until a signal ends it;
/// the agent removes sandboxes with SIGKILL after the pod's containers have stopped.
#[rustfmt::skip]
pub const PAUSE_PROGRAM: [u8; 129] = [
    // ELF header: magic, 64-bit, little-endian, version 1, System V ABI.
    0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 0,                                   // e_type: executable
    0x3e, 0,                                // e_machine: x86-64
    1, 0, 0, 0,                             // e_version
    0x78, 0, 0x40, 0, 0, 0, 0, 0,           // e_entry: 0x400078, the code below
    0x40, 0, 0, 0, 0, 0, 0, 0,              // e_phoff: the program header follows
    0, 0, 0, 0, 0, 0, 0, 0,                 // e_shoff: no section headers
    0, 0, 0, 0,                             // e_flags
    0x40, 0,                                // e_ehsize
    0x38, 0,                                // e_phentsize
    1, 0,                                   // e_phnum
    0, 0, 0, 0, 0, 0,                       // e_shentsize, e_shnum, e_shstrndx
    // Program header: one PT_LOAD segment, readable and executable, mapping the whole file.
    1, 0, 0, 0,                             // p_type: PT_LOAD
    5, 0, 0, 0,                             // p_flags: R + X
    0, 0, 0, 0, 0, 0, 0, 0,                 // p_offset
    0, 0, 0x40, 0, 0, 0, 0, 0,              // p_vaddr: 0x400000
    0, 0, 0x40, 0, 0, 0, 0, 0,              // p_paddr
    129, 0, 0, 0, 0, 0, 0, 0,               // p_filesz
    129, 0, 0, 0, 0, 0, 0, 0,               // p_memsz
    0, 0x10, 0, 0, 0, 0, 0, 0,              // p_align: 4096
    // Code at 0x78.
    0xb8, 34, 0, 0, 0,                      // mov eax, 34 (SYS_pause)
    0x0f, 0x05,                             // syscall
    0xeb, 0xf7,                             // jmp back to mov
];

/// The image name, versioned by the program so that a changed program is a new image.
pub fn image_name() -> String {
    let digest = crate::manifest::hex_digest(&PAUSE_PROGRAM);
    format!("berth/pause:{}", &digest[..12])
}

/// The root filesystem of the sandbox image, as a tar archive.
pub fn rootfs() -> Vec<u8> {
    archive(&[TarEntry::File(TarFile { path: "pause", mode: 0o755, contents: &PAUSE_PROGRAM })])
}
