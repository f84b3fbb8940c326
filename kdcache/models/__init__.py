"""kdcache.models"""
