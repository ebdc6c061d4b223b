//! Ethernet/VLAN/IPv4/IPv6/UDP headers: parsing, building and checksums, once for every backend.
