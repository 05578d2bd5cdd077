"""Pure domain logic: values and rules with no I/O and no imports from the rest of Posthorn."""
