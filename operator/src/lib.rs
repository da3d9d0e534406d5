//! gantry-operator: keeps the children of every `GoServer` in the shape its
//! spec asks for.
