"""phases/recovery"""
