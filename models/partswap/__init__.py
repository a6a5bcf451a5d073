"""Part swap family: FuseAnyPart part boxes and the classic cut-and-paste baseline."""
