"""phases/baseline"""
