"""Building the models the workflow studies: the tiny family, and real small models shipped in pip packages."""
