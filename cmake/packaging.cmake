# Installing Drover and its Debian package (docs/operations.md, "Installing
# the package"). `cmake --install build --prefix P` puts the two programs,
# the example configurations and the systemd units under P; scripts/package
# builds the .deb with CPack (prefix /usr) and checks its contents.
#
# Not installed yet: the libraries and headers (Drover as a CMake package
# for a team's own worker binary, issue 14) -- the package holds what an
# operator runs, not a development kit.
include(GNUInstallDirs)
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

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME drover)
set(CPACK_PACKAGE_VENDOR "Drover")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "distributed runtime for long-running jobs (node and droverctl)")
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
