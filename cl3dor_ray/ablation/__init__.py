"""`cl3dor ablate`: does each part of CL3DOR help? (plan -> runner -> report)"""
