//! Test access to the local control plane started by `e2e/testenv.sh`.
