"""kdcache.train"""
