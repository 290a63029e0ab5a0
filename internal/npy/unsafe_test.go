package npy

import "unsafe"

func unsafePointer(p *float32) unsafe.Pointer { return unsafe.Pointer(p) }
