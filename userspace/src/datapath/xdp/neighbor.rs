//! Next-hop MAC addresses from the kernel routes and neighbour table, over netlink.
