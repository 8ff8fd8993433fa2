"""What a model becomes: ONNX import, the IR, graph passes, layouts, memory, plans and checked Programs.

The modules are imported on use (``kernelforge.graph.prepare`` needs the ``onnx`` package; a Program of one
kernel does not). Entry points: :func:`kernelforge.graph.prepare.prepare_graph`,
:func:`kernelforge.graph.plan.plan_graph`, :func:`kernelforge.graph.program.build_program`.
"""
