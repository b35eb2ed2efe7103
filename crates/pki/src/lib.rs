//! Certificate issuing shared by the hooks, the controller and the tests.
