"""SemanticREPA: the Structure Alignment Module, the ID Alignment Module and their losses."""
