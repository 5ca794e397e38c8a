"""phases/cross_arch"""
