"""phases/collaboration"""
