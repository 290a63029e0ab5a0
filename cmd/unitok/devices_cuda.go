//go:build cuda

package main

import "github.com/unitok/unitok"

func init() { cudaDeviceCount = unitok.CUDADeviceCount }
