//! bottle-scanner: secret scanning (DLP) shared by the proxy and the git gate.
