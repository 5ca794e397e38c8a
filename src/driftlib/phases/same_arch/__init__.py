"""phases/same_arch"""
