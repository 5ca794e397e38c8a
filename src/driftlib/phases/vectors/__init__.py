"""phases/vectors"""
