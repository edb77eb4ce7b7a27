"""The studio's tabs: each module lays out one tab (`layout`) and wires its buttons (`wire`)."""
