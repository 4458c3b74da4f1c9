package httplite

import "syscall"

var syscallEMFILE = syscall.EMFILE
