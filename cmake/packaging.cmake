# Installing Drover and its Debian package (docs/operations.md, "Installing
# the package"). `cmake --install build --prefix P` puts the two programs,
# the example configurations, the systemd units, and Drover as a CMake
# package (libraries, headers, schemas, DroverConfig.cmake; docs/
# custom_workers.md) under P; scripts/package builds the .deb with CPack
# (prefix /usr) and checks its contents.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
# `install` (and CPack's preinstall) must not build every target (tests and
# benchmarks: minutes on 2 cores): scripts/package builds the two programs
# first.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY TRUE)

install(TARGETS drover-node droverctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Example configurations, to copy to /etc/drover/ and edit: never installed
# as live configuration, since each one needs this cluster's secrets and
# addresses first (the units start nothing until it exists).
install(FILES
  config/drover.ini
  config/package/coordinator.ini
  config/package/worker.ini
  config/package/gateway.ini
  DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# systemd units for the three roles (config/systemd/).
install(FILES
  config/systemd/drover-coordinator.service
  config/systemd/drover-worker.service
  config/systemd/drover-gateway.service
  DESTINATION lib/systemd/system)

install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

# -- Drover as a CMake package -------------------------------------------------
# find_package(Drover 0.2 REQUIRED) in another project, then link
# Drover::worker (drover::node_main: a worker program with its own job
# types) or Drover::client (the client API). The libraries are static; their
# dependencies are Debian's shared libraries, found again by DroverConfig.
install(TARGETS drover_schemas drover_runtime drover_actors drover_gateway
                drover_node drover_client
  EXPORT DroverTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/drover)
# Headers as the sources include them ("runtime/task.hpp"), under
# include/drover, which the targets put on the include path; the public
# entry points are <drover/worker.hpp> and <drover/client.hpp>.
install(DIRECTORY runtime actors DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/drover
  FILES_MATCHING PATTERN "*.hpp" PATTERN "detail" EXCLUDE)
install(DIRECTORY include/drover DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")
install(DIRECTORY schemas DESTINATION ${CMAKE_INSTALL_DATADIR}/drover
  FILES_MATCHING PATTERN "*.capnp")
install(EXPORT DroverTargets NAMESPACE Drover::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Drover)
configure_package_config_file(cmake/DroverConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/DroverConfig.cmake"
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Drover)
# 0.x: a minor version may break the API, so 0.2 accepts 0.2.* only.
write_basic_package_version_file(
  "${CMAKE_CURRENT_BINARY_DIR}/DroverConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/DroverConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/DroverConfigVersion.cmake"
              cmake/FindCAF.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Drover)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME drover)
set(CPACK_PACKAGE_VENDOR "Drover")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "distributed runtime for long-running jobs (node, droverctl, libraries)")
set(CPACK_PACKAGE_CONTACT "Drover engineers <drover@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
# The shared libraries the programs link (CAF, Cap'n Proto, libpq, Boost,
# OpenSSL, spdlog), found by dpkg-shlibdeps.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser") # postinst; shlibdeps add the rest
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "postgresql")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  "${CMAKE_CURRENT_SOURCE_DIR}/packaging/postinst"
  "${CMAKE_CURRENT_SOURCE_DIR}/packaging/prerm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
