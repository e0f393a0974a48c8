// Package load holds Ferry's load, memory and flood tests (issue
// "Reliability and security under faults, load and hostile input"): many
// notebooks at once through one jupyter-server, a 1 GB state move with the
// Go heap sampled throughout, and IOPub floods at both kernels. The tests
// run Ferry kernels in this process (client.StartFerry) so goroutines and
// heap can be measured; the kernels they drive are real ipykernels and a
// real jupyter-server on loopback.
package load
