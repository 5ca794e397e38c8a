"""phases/game"""
